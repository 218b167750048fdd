//! Hook secrets sealed with AES-256-GCM under a local key file.

use std::path::Path;

use async_trait::async_trait;
use hookbridge_core::aead::{self, KEY_LEN};
use hookbridge_core::hook::{HookSecrets, SealedSecrets, SecretsOwner};
use hookbridge_core::ports::Sealer;
use hookbridge_core::{Error, Result};

use crate::error::InitError;

/// The format byte of blobs sealed before secrets were bound to their hook: they open for
/// any hook until `hookbridge migrate` re-seals them.
const FORMAT_UNBOUND: u8 = 1;
/// What unbound blobs were bound to: only their purpose.
const UNBOUND_AAD: &[u8] = b"hookbridge hook secrets v1";
/// The format byte of blobs bound to their hook ([`SecretsOwner::associated_data`]).
const FORMAT_BOUND: u8 = 3;

/// Seals with a 256-bit key read from a file that only its owner can read.
#[derive(Clone)]
pub struct LocalKeySealer {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for LocalKeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKeySealer([redacted])")
    }
}

impl LocalKeySealer {
    /// Loads the key file.
    pub fn load(path: &Path) -> Result<Self, InitError> {
        let err = |reason: String| InitError::KeyFile { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key: [u8; KEY_LEN] =
            bytes.as_slice().try_into().map_err(|_| err(format!("expected {KEY_LEN} bytes, found {}", bytes.len())))?;
        Ok(Self { key })
    }

    /// Loads the key file, creating it with a fresh random key and mode 0600 if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, InitError> {
        if !path.exists() {
            let err = |e: std::io::Error| InitError::KeyFile { path: path.to_path_buf(), reason: e.to_string() };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::files::owner_only_dir(dir).map_err(err)?;
            }
            let mut key = [0u8; KEY_LEN];
            rand::fill(&mut key);
            crate::files::write_new_whole(path, &key).map_err(err)?;
        }
        Self::load(path)
    }
}

impl LocalKeySealer {
    /// Whether this key sealed `sealed`: `Some(false)` only when the blob is of a format
    /// this version knows and its authentication fails under this key; `None` when that
    /// cannot be told (an unknown format, a newer release's).
    pub(crate) fn sealed_with_this_key(&self, owner: SecretsOwner<'_>, sealed: &SealedSecrets) -> Option<bool> {
        let (format, body) = sealed.0.split_first()?;
        let aad = match *format {
            FORMAT_BOUND => owner.associated_data(),
            FORMAT_UNBOUND => UNBOUND_AAD.to_vec(),
            _ => return None,
        };
        Some(aead::open(&self.key, &aad, body).is_ok())
    }

    /// Seals in the format before secrets were bound to their hook. Kept only so the
    /// migration that re-seals such blobs can be tested.
    #[doc(hidden)]
    pub fn seal_unbound(&self, secrets: &HookSecrets) -> Result<SealedSecrets> {
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::backend("sealer.encode", e))?;
        let mut out = vec![FORMAT_UNBOUND];
        out.extend(aead::seal(&self.key, UNBOUND_AAD, &plain));
        Ok(SealedSecrets(out))
    }
}

#[async_trait]
impl Sealer for LocalKeySealer {
    async fn seal(&self, owner: SecretsOwner<'_>, secrets: &HookSecrets) -> Result<SealedSecrets> {
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::backend("sealer.encode", e))?;
        let mut out = vec![FORMAT_BOUND];
        out.extend(aead::seal(&self.key, &owner.associated_data(), &plain));
        Ok(SealedSecrets(out))
    }

    async fn open(&self, owner: SecretsOwner<'_>, sealed: &SealedSecrets) -> Result<HookSecrets> {
        let (format, body) = sealed.0.split_first().ok_or_else(|| Error::corrupt("sealed secrets", "empty"))?;
        let aad = match *format {
            FORMAT_BOUND => owner.associated_data(),
            FORMAT_UNBOUND => UNBOUND_AAD.to_vec(),
            // A format past the platform's known ones (the KMS sealer's are 2 and 4) is a
            // newer release's; a known one of the other sealer's is not this key's.
            f if f > hookbridge_core::hook::NEWEST_SEALED_FORMAT => {
                return Err(Error::NewerFormat { what: "sealed secrets" });
            }
            _ => return Err(Error::corrupt("sealed secrets", "unknown format")),
        };
        let plain = aead::open(&self.key, &aad, body)
            .map_err(|_| Error::corrupt("sealed secrets", "not sealed by this key for this hook"))?;
        HookSecrets::from_opened(&plain)
    }

    fn is_current(&self, sealed: &SealedSecrets) -> bool {
        sealed.0.first() == Some(&FORMAT_BOUND)
    }
}
