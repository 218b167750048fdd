//! Field-level validation errors, named by the path a client wrote them at.

use serde::{Deserialize, Serialize};

/// One invalid field: `auth.token_url`, `headers[2].name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where in the request body, dotted, with `[i]` for array items.
    pub field: String,
    /// What is wrong, lowercase, saying what would be accepted.
    pub message: String,
}

/// The most errors a request is answered with. A list of a million bad items (3 MiB of
/// `""`) made a problem document of tens of megabytes, past what Lambda can answer (6 MB),
/// so the client got API Gateway's bare `500`, not the fields at fault.
pub const MAX_REPORTED: usize = 100;

/// The longest field path or message an error carries, in bytes: a message may quote what
/// the client sent (a JSON parser's does, escaping every quote in it again).
pub const MAX_TEXT: usize = 512;

/// The largest character boundary of `text` at or before `at`.
fn boundary_before(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `text` cut to [`MAX_TEXT`] bytes, on a character boundary, `…` marking the cut.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        text.truncate(boundary_before(&text, MAX_TEXT));
        text.push('…');
    }
    text
}

/// A field path held to [`MAX_TEXT`] bytes by cutting its middle: its end names the
/// field itself, which two paths through one long key differ by.
fn bounded_path(path: String) -> String {
    if path.len() <= MAX_TEXT {
        return path;
    }
    let half = MAX_TEXT / 2;
    let head = boundary_before(&path, half);
    let mut tail = path.len() - half;
    while !path.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &path[..head], &path[tail..])
}

impl FieldError {
    /// An error at `field`, each held to [`MAX_TEXT`].
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: bounded_path(field.into()), message: bounded(message.into()) }
    }
}

/// Collects the errors of a request rather than stopping at the first, so a client fixes
/// them in one round: the first [`MAX_REPORTED`].
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records an error, if fewer than [`MAX_REPORTED`] are.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < MAX_REPORTED {
            self.0.push(FieldError::new(field, message));
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() { Ok(value) } else { Err(self.0) }
    }

    /// The errors recorded so far.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// Tells a field that is present (even as `null`) from one left out, which `Option` alone
/// cannot: left out is `None` (through `#[serde(default)]`), `null` is `Some(None)`. For
/// `#[serde(default, deserialize_with = "…::present")]`.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long path keeps its end, which tells two fields under one long key apart; a long
    /// message keeps its start. Both are cut on character boundaries.
    #[test]
    fn long_fields_keep_their_end_and_long_messages_their_start() {
        let key = "é".repeat(400);
        let (id, name) =
            (FieldError::new(format!("detail.{key}.id"), "x"), FieldError::new(format!("detail.{key}.name"), "x"));
        assert!(id.field.len() <= MAX_TEXT + '…'.len_utf8() && id.field.ends_with(".id"), "{}", id.field);
        assert!(name.field.ends_with(".name") && name.field.starts_with("detail.é"), "{}", name.field);
        let long = FieldError::new("f", "ü".repeat(600));
        assert!(
            long.message.len() <= MAX_TEXT + '…'.len_utf8()
                && long.message.starts_with('ü')
                && long.message.ends_with('…')
        );
        assert_eq!(
            FieldError::new("short", "message"),
            FieldError { field: "short".into(), message: "message".into() }
        );
    }
}
