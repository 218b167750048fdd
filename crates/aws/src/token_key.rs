//! The API's HS256 token key, read from Secrets Manager instead of the function's
//! environment (where anyone allowed `lambda:GetFunctionConfiguration` could read it). It
//! is read at cold start and again when [`REREAD_AFTER`] has passed, so a rotated secret is
//! picked up within minutes; if a re-read fails, the key already held is used until the next
//! re-read is due.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use hookbridge_core::ports::KeySource;
use hookbridge_core::secret::Secret;
use hookbridge_core::settings::MIN_HS256_KEY_BYTES;
use hookbridge_core::{Error, Result};
use tokio::time::Instant;

/// How long a key read is used before the secret is read again.
pub const REREAD_AFTER: Duration = Duration::from_secs(5 * 60);

/// The key in a Secrets Manager secret (its `SecretString`).
pub struct SecretsManagerKey {
    client: Client,
    secret_id: String,
    reread_after: Duration,
    held: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for SecretsManagerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerKey").field("secret_id", &self.secret_id).finish_non_exhaustive()
    }
}

impl SecretsManagerKey {
    /// The key in the secret `secret_id` (a name or an ARN).
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        Self { client, secret_id: secret_id.into(), reread_after: REREAD_AFTER, held: Mutex::new(None) }
    }

    /// The same, read again after `after` instead of [`REREAD_AFTER`] (tests).
    pub fn reread_after(mut self, after: Duration) -> Self {
        self.reread_after = after;
        self
    }

    async fn read(&self) -> Result<Secret> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| Error::backend("secretsmanager.GetSecretValue", e))?;
        let text =
            out.secret_string.ok_or_else(|| Error::corrupt_as("the token key secret (it has no SecretString)"))?;
        if text.len() < MIN_HS256_KEY_BYTES {
            return Err(Error::corrupt(
                "the token key secret",
                format!("it is shorter than {MIN_HS256_KEY_BYTES} bytes"),
            ));
        }
        Ok(Secret::new(text))
    }
}

#[async_trait]
impl KeySource for SecretsManagerKey {
    async fn key(&self) -> Result<Secret> {
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match held {
            Some((key, at)) if at.elapsed() < self.reread_after => Ok(key),
            held => match self.read().await {
                Ok(key) => {
                    *self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((key.clone(), Instant::now()));
                    Ok(key)
                }
                Err(e) => match held {
                    Some((key, _)) => {
                        // Held as if read now: left dated as it was, every request after
                        // one failed re-read waited on Secrets Manager again (its retries
                        // and timeouts too), during the very outage that failed it.
                        tracing::warn!(error = %e, "could not re-read the token key; using the one held");
                        *self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((key.clone(), Instant::now()));
                        Ok(key)
                    }
                    None => Err(e),
                },
            },
        }
    }
}
