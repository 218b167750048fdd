//! Encryption of hook secrets at rest.

use async_trait::async_trait;

use crate::Result;
use crate::hook::{HookSecrets, SealedSecrets, SecretsOwner};

/// Seals and opens [`HookSecrets`]: with a KMS key on AWS, with a local key file on the
/// embedded backend. A store never sees a secret in clear, and a blob opens only for the
/// hook it was sealed for.
#[async_trait]
pub trait Sealer: Send + Sync {
    /// Encrypts `owner`'s secrets.
    async fn seal(&self, owner: SecretsOwner<'_>, secrets: &HookSecrets) -> Result<SealedSecrets>;
    /// Decrypts; fails with [`crate::Error::Corrupt`] if the blob was not sealed by this key
    /// for `owner`. Blobs of the format before secrets were bound to their hook still open
    /// (until `hookbridge migrate` re-seals them).
    async fn open(&self, owner: SecretsOwner<'_>, sealed: &SealedSecrets) -> Result<HookSecrets>;
    /// Whether `sealed` is in the current, hook-bound format.
    fn is_current(&self, sealed: &SealedSecrets) -> bool;
}
