//! Request signatures: Standard Webhooks on every request, and Keycloak's
//! `X-Keycloak-Signature` for receivers built for Keycloak (Phase Two) webhooks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::SigningSecret;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the message id (our delivery id).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the unix seconds of this attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying one or more `v1,<base64>` signatures, space separated.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Keycloak's header: hex HMAC-SHA256 of the body alone.
pub const HEADER_KEYCLOAK: &str = "x-keycloak-signature";
/// How far a receiver's clock may be from the timestamp before it rejects the request;
/// the Standard Webhooks reference libraries use five minutes.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// One Standard Webhooks signature, `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret.key());
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret, space separated, so a
/// receiver holding either the old or the new secret verifies during a rotation.
pub fn standard_signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a SigningSecret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.into_iter().map(|s| standard_signature(s, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Keycloak's signature: lowercase hex HMAC-SHA256 of the body, keyed (as Keycloak keys
/// it) with the UTF-8 bytes of the secret as the receiver configured it.
pub fn keycloak_signature(secret: &SigningSecret, body: &[u8]) -> String {
    let mut m = mac(secret.expose().as_bytes());
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Why a receiver would reject a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside tolerance")]
    Timestamp,
    /// No `v1` signature matched.
    #[error("no matching signature")]
    Signature,
}

/// Verifies a request as a Standard Webhooks receiver would: the timestamp within
/// tolerance of `now` and any `v1` signature in the header matching.
pub fn verify_standard(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    // A difference, not a subtraction: a timestamp from the header near i64::MIN overflowed.
    if now.abs_diff(timestamp) > TIMESTAMP_TOLERANCE_SECS as u64 {
        return Err(VerifyError::Timestamp);
    }
    let expected = standard_signature(secret, msg_id, timestamp, body);
    let found = signature_header
        .split(' ')
        .filter(|s| s.starts_with("v1,"))
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
    if found { Ok(()) } else { Err(VerifyError::Signature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Standard Webhooks test vector (standard-webhooks/standard-webhooks,
    /// also in Svix's libraries).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn published_vector_signs() {
        let s = SigningSecret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(standard_signature(&s, VECTOR_ID, VECTOR_TS, VECTOR_BODY.as_bytes()), VECTOR_SIG);
    }

    #[test]
    fn published_vector_verifies_and_tampering_fails() {
        let s = SigningSecret::parse(VECTOR_SECRET).unwrap();
        let ok = verify_standard(&s, VECTOR_ID, VECTOR_TS, VECTOR_SIG, VECTOR_BODY.as_bytes(), VECTOR_TS + 10);
        assert_eq!(ok, Ok(()));
        let tampered = verify_standard(&s, VECTOR_ID, VECTOR_TS, VECTOR_SIG, b"{\"test\": 1}", VECTOR_TS);
        assert_eq!(tampered, Err(VerifyError::Signature));
        let stale = verify_standard(&s, VECTOR_ID, VECTOR_TS, VECTOR_SIG, VECTOR_BODY.as_bytes(), VECTOR_TS + 301);
        assert_eq!(stale, Err(VerifyError::Timestamp));
        // A timestamp a header can carry, however far off: refused, never an overflow.
        for far in [i64::MIN, i64::MAX] {
            let r = verify_standard(&s, VECTOR_ID, far, VECTOR_SIG, VECTOR_BODY.as_bytes(), VECTOR_TS);
            assert_eq!(r, Err(VerifyError::Timestamp), "{far}");
        }
    }

    #[test]
    fn rotation_header_carries_both_and_either_verifies() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let header = standard_signature_header([&new, &old], "id", 10, b"body");
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify_standard(&old, "id", 10, &header, b"body", 10), Ok(()));
        assert_eq!(verify_standard(&new, "id", 10, &header, b"body", 10), Ok(()));
        let other = SigningSecret::generate();
        assert_eq!(verify_standard(&other, "id", 10, &header, b"body", 10), Err(VerifyError::Signature));
    }

    #[test]
    fn keycloak_signature_is_hex_hmac_of_body() {
        // RFC 4231-style check computed independently:
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
        let s = SigningSecret::parse(VECTOR_SECRET).unwrap();
        let sig = keycloak_signature(&s, br#"{"a":1}"#);
        assert_eq!(sig.len(), 64);
        assert_eq!(sig, KEYCLOAK_EXPECTED);
    }

    proptest::proptest! {
        /// For any body, id and time the signature verifies, and any change to one byte of
        /// the body, to the id or to the timestamp breaks it.
        #[test]
        fn any_body_and_id_sign_and_verify(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            id in "[ -~]{1,64}",
            ts in 0i64..4_000_000_000,
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let s = SigningSecret::generate();
            let header = standard_signature_header([&s], &id, ts, &body);
            proptest::prop_assert_eq!(verify_standard(&s, &id, ts, &header, &body, ts), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip.index(body.len())] ^= 0x01;
                proptest::prop_assert_eq!(verify_standard(&s, &id, ts, &header, &tampered, ts), Err(VerifyError::Signature));
            }
            let other_id = format!("{id}x");
            proptest::prop_assert_eq!(verify_standard(&s, &other_id, ts, &header, &body, ts), Err(VerifyError::Signature));
            proptest::prop_assert_eq!(verify_standard(&s, &id, ts + 1, &header, &body, ts), Err(VerifyError::Signature));
        }
    }

    const KEYCLOAK_EXPECTED: &str = "45ec03b2b33403c8043a90de06bedad0827183927115fd7e448ef97eeb13c5be";
}
