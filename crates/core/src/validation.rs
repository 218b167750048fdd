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

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Collects every error of a request rather than stopping at the first, so a client fixes
/// all of them in one round.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records an error.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
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
