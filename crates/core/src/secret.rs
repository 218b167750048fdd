//! Secret values: they print as `[redacted]` and compare in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A secret string: an auth password, an API key, a header value marked secret.
///
/// `Debug` and `Display` never show the value, so a secret that reaches a log line or an
/// error message by accident shows as `[redacted]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

/// The prefix Standard Webhooks gives signing secrets.
pub const SIGNING_SECRET_PREFIX: &str = "whsec_";
/// Fewer random bytes than this would make the HMAC key guessable.
pub const SIGNING_SECRET_MIN_BYTES: usize = 24;
/// Standard Webhooks allows up to 64 bytes.
pub const SIGNING_SECRET_MAX_BYTES: usize = 64;
/// What we generate: the HMAC-SHA256 block-size sweet spot recommended by Standard Webhooks.
const GENERATED_SECRET_BYTES: usize = 32;

/// The shortest secret a client may choose itself on the Keycloak and ExtremeCloud IQ
/// routes (their own documents show 8- and 9-character examples).
pub const CLIENT_SECRET_MIN_LEN: usize = 8;
/// The longest such secret.
pub const CLIENT_SECRET_MAX_LEN: usize = 256;

/// A hook's signing secret: `whsec_` + base64 of 24–64 bytes (Standard Webhooks), or a
/// secret a Keycloak or ExtremeCloud IQ client chose itself, whose key is its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SigningSecret {
    text: Secret,
    key: Vec<u8>,
}

/// Why a signing secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSigningSecret {
    /// No `whsec_` prefix.
    #[error("must start with \"whsec_\"")]
    Prefix,
    /// The rest is not standard base64.
    #[error("must be \"whsec_\" followed by standard base64")]
    Base64,
    /// Too short or too long.
    #[error("must encode between 24 and 64 bytes, found {0}")]
    Length(usize),
    /// A client-chosen secret too short or too long, or not printable.
    #[error(
        "must be {CLIENT_SECRET_MIN_LEN}-{CLIENT_SECRET_MAX_LEN} printable characters, not starting with \"whsec_\""
    )]
    ClientSecret,
}

impl SigningSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        rand::fill(&mut key[..]);
        let text = format!("{SIGNING_SECRET_PREFIX}{}", STANDARD.encode(&key));
        Self { text: Secret::new(text), key }
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, InvalidSigningSecret> {
        let b64 = text.strip_prefix(SIGNING_SECRET_PREFIX).ok_or(InvalidSigningSecret::Prefix)?;
        let key = STANDARD.decode(b64).map_err(|_| InvalidSigningSecret::Base64)?;
        if !(SIGNING_SECRET_MIN_BYTES..=SIGNING_SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(InvalidSigningSecret::Length(key.len()));
        }
        Ok(Self { text: Secret::new(text), key })
    }

    /// A secret a client chose (Keycloak's and ExtremeCloud IQ's APIs take any text): its
    /// HMAC key is its text as UTF-8 bytes, as those clients' receivers compute it.
    /// One starting `whsec_` is refused: stored, it would be read back as a Standard
    /// Webhooks secret and keyed with its decoded bytes instead of its text.
    pub fn client_chosen(text: &str) -> Result<Self, InvalidSigningSecret> {
        if text.starts_with(SIGNING_SECRET_PREFIX) {
            return Err(InvalidSigningSecret::ClientSecret);
        }
        Self::chosen(text)
    }

    /// A client-chosen secret as stored (one from before `whsec_` was refused included).
    fn chosen(text: &str) -> Result<Self, InvalidSigningSecret> {
        let printable = text.chars().all(|c| c == ' ' || c.is_ascii_graphic());
        if !(CLIENT_SECRET_MIN_LEN..=CLIENT_SECRET_MAX_LEN).contains(&text.len()) || !printable {
            return Err(InvalidSigningSecret::ClientSecret);
        }
        Ok(Self { text: Secret::new(text), key: text.as_bytes().to_vec() })
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The `whsec_…` text, for the create and rotate responses only.
    pub fn expose(&self) -> &str {
        self.text.expose()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl TryFrom<String> for SigningSecret {
    type Error = InvalidSigningSecret;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        // Stored secrets are either kind; only a `whsec_` one that parses is Standard Webhooks'.
        Self::parse(&s).or_else(|e| Self::chosen(&s).map_err(|_| e))
    }
}

impl From<SigningSecret> for String {
    fn from(s: SigningSecret) -> Self {
        s.text.0
    }
}

/// What stands in a text for a secret value [`redact`] took out of it.
pub const REDACTED: &str = "[redacted]";

/// The shortest value [`redact`] looks for: a shorter one would blank ordinary words.
const REDACT_MIN_LEN: usize = 4;

/// The shortest start of a value [`redact`] cuts from the end of a text: a shorter one
/// would as likely be the text's own.
const REDACT_MIN_START: usize = 6;

/// The shortest part of a value (see [`parts`]) [`redact`] looks for on its own.
const REDACT_MIN_PART: usize = 8;

/// The credentials inside a header-like value, which an echo may show without the rest:
/// its words and `key=value` halves (`Bearer sk_live_…`, `sid=…; theme=…`) of at least
/// [`REDACT_MIN_PART`] bytes, and a `Basic` credential decoded, with its password (of at
/// least [`REDACT_MIN_LEN`], as any secret value).
fn parts(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut out: Vec<String> = value
        .split(|c: char| c.is_whitespace() || matches!(c, '=' | ':' | ';' | ','))
        .filter(|p| p.len() >= REDACT_MIN_PART && *p != value)
        .map(str::to_owned)
        .collect();
    let basic = value.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    if let Some(decoded) = basic
        .and_then(|(_, b64)| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|d| String::from_utf8(d).ok())
    {
        if let Some((_, password)) = decoded.split_once(':').filter(|(_, p)| p.len() >= REDACT_MIN_LEN) {
            out.push(password.to_owned());
        }
        out.push(decoded);
    }
    out
}

/// `text` with every occurrence of each of `values` replaced by [`REDACTED`], and cut
/// before a trailing start of one (a value the text's cap cut in two). For what a receiver
/// answers, which is kept and shown to everyone who may read the hook: an endpoint that
/// echoes its request (an echo service, a debug endpoint, "invalid key: …") would otherwise
/// hand them the hook's credentials, and store them in clear. A value's [`parts`] are
/// looked for too: `invalid token sk_live_…` echoes only the token of `Bearer sk_live_…`.
pub fn redact(text: &str, values: &[&str]) -> String {
    if text.len() < REDACT_MIN_LEN {
        return text.to_owned();
    }
    let parted: Vec<String> = values.iter().flat_map(|v| parts(v)).collect();
    // As sent: a header value goes without the spaces around it (a pasted key's trailing
    // space), and a short one has no part long enough to be looked for on its own.
    let trimmed = values.iter().map(|v| v.trim_matches([' ', '\t'])).filter(|t| !values.contains(t));
    let values: Vec<&str> = values.iter().copied().chain(trimmed).chain(parted.iter().map(String::as_str)).collect();
    let values = values.as_slice();
    // As an echo may show them: as sent in a form or a query (percent-encoded), and as a
    // JSON echo writes them (escaped, `/` too by some).
    let encoded: Vec<String> = values
        .iter()
        .filter(|v| v.len() >= REDACT_MIN_LEN)
        .flat_map(|v| {
            let json = serde_json::to_string(v).unwrap_or_default();
            let json = json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned();
            [form_encoded(v), json.replace('/', "\\/"), json]
        })
        .filter(|e| !values.contains(&e.as_str()))
        .collect();
    let mut values: Vec<&str> = values
        .iter()
        .copied()
        .chain(encoded.iter().map(String::as_str))
        .filter(|v| v.len() >= REDACT_MIN_LEN)
        .collect();
    values.dedup();
    // The longest first, so a value inside another (a password inside its Basic form's
    // plain text) does not leave the rest of the longer one.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_owned();
    for v in &values {
        if out.contains(v) {
            out = out.replace(v, REDACTED);
        }
    }
    for v in &values {
        let cut = (REDACT_MIN_START..v.len()).rev().find(|&k| v.is_char_boundary(k) && out.ends_with(&v[..k]));
        if let Some(k) = cut {
            out.truncate(out.len() - k);
            out.push_str(REDACTED);
            break;
        }
    }
    out
}

/// `value` as `application/x-www-form-urlencoded` writes it (what a token request's form
/// and query carry).
fn form_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_takes_out_every_value_and_a_start_of_one_cut_at_the_end() {
        let values = ["s3cret-key", "pw", "dXNlcjpzM2NyZXQta2V5", "key"];
        assert_eq!(
            redact("bad key s3cret-key; got Basic dXNlcjpzM2NyZXQta2V5 and s3cret-key", &values),
            "bad key [redacted]; got Basic [redacted] and [redacted]"
        );
        assert_eq!(redact("pw is too short to look for", &values), "pw is too short to look for");
        assert_eq!(redact("cut at the cap: s3cret-", &values), "cut at the cap: [redacted]");
        assert_eq!(redact("ends in s3cre", &values), "ends in s3cre", "too little of it to tell");
        assert_eq!(redact("nothing here", &[]), "nothing here");
        // As a form, a query or a JSON echo writes them.
        let values = ["a+b/c d\"e"];
        for echoed in ["a%2Bb%2Fc+d%22e", r#"a+b/c d\"e"#, r#"a+b\/c d\"e"#] {
            assert_eq!(redact(&format!("got {echoed}."), &values), "got [redacted].", "{echoed}");
        }
    }

    /// A value stored with spaces around it is sent without them, and echoed so.
    #[test]
    fn redact_takes_out_a_value_as_sent_without_the_spaces_around_it() {
        assert_eq!(redact("key abc1234, invalid", &["abc1234 "]), format!("key {REDACTED}, invalid"));
        assert_eq!(redact("k3y9x refused", &["\tk3y9x"]), format!("{REDACTED} refused"));
    }

    #[test]
    fn redact_takes_out_the_credential_inside_a_header_value() {
        let values = ["Bearer sk_live_51Hx9", "sid=a81f3c99e2; theme=dark", "Basic dXNlcjpodW50ZXIyaHVudGVy"];
        assert_eq!(redact("invalid token sk_live_51Hx9", &values), "invalid token [redacted]");
        assert_eq!(redact("session a81f3c99e2 expired", &values), "session [redacted] expired");
        assert_eq!(redact("no user user:hunter2hunter", &values), "no user [redacted]");
        assert_eq!(redact("wrong password hunter2hunter", &values), "wrong password [redacted]");
        // Short words of a value are not looked for on their own: they would blank ordinary text.
        assert_eq!(redact("Bearer tokens and the dark theme", &values), "Bearer tokens and the dark theme");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let g = SigningSecret::generate();
        assert!(!format!("{g:?}").contains(&g.expose()[6..]));
    }

    #[test]
    fn a_client_chosen_secret_keys_with_its_text_and_round_trips_through_storage() {
        let s = SigningSecret::client_chosen("ofj09saP4").unwrap();
        assert_eq!(s.key(), b"ofj09saP4");
        let stored: String = s.clone().into();
        assert_eq!(SigningSecret::try_from(stored).unwrap(), s);
        assert!(SigningSecret::client_chosen("short").is_err());
        assert!(SigningSecret::client_chosen("tab\tinside").is_err());
        assert!(SigningSecret::client_chosen(&"x".repeat(257)).is_err());
        // One that looks like ours would be keyed differently once stored: refused.
        let looks_ours = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(SigningSecret::client_chosen(looks_ours).is_err());
        assert_ne!(SigningSecret::try_from(looks_ours.to_owned()).unwrap().key(), looks_ours.as_bytes());
    }

    #[test]
    fn generated_secret_round_trips() {
        let g = SigningSecret::generate();
        let parsed = SigningSecret::parse(g.expose()).unwrap();
        assert_eq!(parsed.key(), g.key());
        assert_eq!(parsed.key().len(), 32);
    }

    #[test]
    fn parse_rejects_bad_secrets() {
        assert_eq!(SigningSecret::parse("abc"), Err(InvalidSigningSecret::Prefix));
        assert_eq!(SigningSecret::parse("whsec_!!!"), Err(InvalidSigningSecret::Base64));
        assert_eq!(SigningSecret::parse("whsec_AAAA"), Err(InvalidSigningSecret::Length(3)));
    }
}
