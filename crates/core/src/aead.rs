//! Authenticated encryption of sealed secrets (AES-256-GCM), shared by both sealers: the
//! embedded one keys it from a local key file, the AWS one from a KMS data key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

/// Length of the AES-256 key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// Decryption failed: wrong key, or the bytes were changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decrypt: wrong key or tampered data")]
pub struct OpenError;

/// Encrypts `plain` under `key`, binding `aad` (authenticated, not encrypted). The output
/// is the random nonce followed by the ciphertext and tag.
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce: [u8; NONCE_LEN] = rand::random();
    // Encryption fails only for plaintexts beyond 64 GiB.
    let sealed = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad }).unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Reverses [`seal`].
pub fn open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE_LEN {
        return Err(OpenError);
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).map_err(|_| OpenError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = [7u8; KEY_LEN];
        let sealed = seal(&key, b"ctx", b"secret");
        assert_eq!(open(&key, b"ctx", &sealed).unwrap(), b"secret");
        assert_eq!(open(&key, b"other", &sealed), Err(OpenError));
        assert_eq!(open(&[8u8; KEY_LEN], b"ctx", &sealed), Err(OpenError));
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(open(&key, b"ctx", &bad), Err(OpenError));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }
}
