//! Hook secrets sealed with AES-256-GCM under a local key file.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use hookbridge_core::hook::{HookSecrets, SealedSecrets};
use hookbridge_core::ports::Sealer;
use hookbridge_core::{Error, Result};

use crate::error::InitError;

/// The format byte in front of every sealed blob, so the format can change later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Seals with a 256-bit key read from a file that only its owner can read.
#[derive(Clone)]
pub struct LocalKeySealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for LocalKeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKeySealer([redacted])")
    }
}

impl LocalKeySealer {
    /// Loads the key file.
    pub fn load(path: &Path) -> Result<Self, InitError> {
        let err = |reason: String| InitError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() != KEY_LEN {
            return Err(err(format!(
                "expected {KEY_LEN} bytes, found {}",
                bytes.len()
            )));
        }
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Loads the key file, creating it with a fresh random key and mode 0600 if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, InitError> {
        if !path.exists() {
            let err = |e: std::io::Error| InitError::KeyFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let mut key = [0u8; KEY_LEN];
            rand::fill(&mut key);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(err)?;
            f.write_all(&key).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        Self::load(path)
    }
}

#[async_trait]
impl Sealer for LocalKeySealer {
    async fn seal(&self, secrets: &HookSecrets) -> Result<SealedSecrets> {
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::backend("sealer.encode", e))?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| Error::backend("sealer.encrypt", "AES-GCM encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(SealedSecrets(out))
    }

    async fn open(&self, sealed: &SealedSecrets) -> Result<HookSecrets> {
        let b = &sealed.0;
        if b.len() < 1 + NONCE_LEN || b[0] != FORMAT_V1 {
            return Err(Error::Corrupt("sealed secrets: unknown format".to_owned()));
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&b[1..1 + NONCE_LEN]), &b[1 + NONCE_LEN..])
            .map_err(|_| Error::Corrupt("sealed secrets: not sealed by this key".to_owned()))?;
        serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("sealed secrets: {e}")))
    }
}
