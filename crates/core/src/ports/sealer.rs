//! Encryption of hook secrets at rest.

use async_trait::async_trait;

use crate::Result;
use crate::hook::{HookSecrets, SealedSecrets};

/// Seals and opens [`HookSecrets`]: with a KMS key on AWS, with a local key file on the
/// embedded backend. A store never sees a secret in clear.
#[async_trait]
pub trait Sealer: Send + Sync {
    /// Encrypts.
    async fn seal(&self, secrets: &HookSecrets) -> Result<SealedSecrets>;
    /// Decrypts; fails with [`crate::Error::Corrupt`] if the blob was not sealed by this key.
    async fn open(&self, sealed: &SealedSecrets) -> Result<HookSecrets>;
}
