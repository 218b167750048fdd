//! Where the API's HS256 token key comes from: given in the configuration, or kept in a
//! secret store (Secrets Manager on AWS) and read at start, so the key never sits in a
//! function's environment and a rotation reaches the API without a deploy.

use async_trait::async_trait;

use crate::Result;
use crate::secret::Secret;

/// The HS256 key's source.
#[async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The key as it is now (a source may cache it for a few minutes).
    async fn key(&self) -> Result<Secret>;

    /// The key once more after it refused a token's signature: read afresh by a source that
    /// caches it, if it has not been lately, for the token may be signed with a key rotated
    /// in since. The same as [`KeySource::key`] for a source that does not cache.
    async fn key_after_refusal(&self) -> Result<Secret> {
        self.key().await
    }
}

#[async_trait]
impl KeySource for Secret {
    async fn key(&self) -> Result<Secret> {
        Ok(self.clone())
    }
}
