//! The API's HS256 token key, read from Secrets Manager instead of the function's
//! environment (where anyone allowed `lambda:GetFunctionConfiguration` could read it). It
//! is read at cold start and again when [`REREAD_AFTER`] has passed, so a rotated secret is
//! picked up within minutes; if a re-read fails, the key already held is used until the next
//! re-read is due. A token the held key refuses has it read again at once, at most every
//! [`REREAD_ON_REFUSAL_AT_MOST_EVERY`], so a token signed with a key just rotated in is not
//! refused by an instance for minutes while another takes it. Until a key has been read at
//! all, one read runs at a time and a failed one stands until [`RETRY_UNREAD_AT_MOST_EVERY`]
//! after it began, so an instance whose secret cannot be read does not ask Secrets Manager
//! on every request.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use hookbridge_core::ports::KeySource;
use hookbridge_core::secret::Secret;
use hookbridge_core::settings::MIN_HS256_KEY_BYTES;
use hookbridge_core::{Error, Result};
use tokio::time::Instant;

/// How long a key read is used before the secret is read again.
pub const REREAD_AFTER: Duration = Duration::from_secs(5 * 60);
/// The shortest time between two reads for a refused token, so a stream of badly signed
/// tokens cannot make the API read the secret on every request.
pub const REREAD_ON_REFUSAL_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// How long after it began a failed read stands while no key is held: tokens that come
/// meanwhile are answered from it. Without it an instance whose secret was not made, or not readable,
/// asked Secrets Manager on every HS256 request (each waiting on its retries and timeouts,
/// all at once when many came together), during the very outage that failed the first.
pub const RETRY_UNREAD_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// The longest one try at reading the secret may take. The SDK bounds only the connection
/// (3.1 s): a Secrets Manager endpoint that took the request and never answered held every
/// request the key was needed for, and those waiting behind a refused token's read, until
/// the function timed out.
pub const READ_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a read may take with the SDK's retries. One request may wait on two reads (a
/// periodic re-read that fails, then a refused token's), and both must end inside the API
/// function's 10 s, so that it answers `503` rather than timing out.
pub const READ_TIMEOUT: Duration = Duration::from_secs(4);

/// The key held, and two times that a failed re-read must not confuse: when the read that
/// got it began (a key from a read begun earlier never replaces it), and when it was last
/// vouched for (a failed re-read vouches for it until the next re-read is due). One time for
/// both let a failed periodic re-read date the old key past a refusal's read of a rotated
/// key begun before it, which then kept the old key and refused the token it was read for.
#[derive(Clone)]
struct Held {
    key: Secret,
    read_began: Instant,
    vouched_at: Instant,
}

/// The key in a Secrets Manager secret (its `SecretString`).
pub struct SecretsManagerKey {
    client: Client,
    secret_id: String,
    reread_after: Duration,
    reread_on_refusal_every: Duration,
    held: Mutex<Option<Held>>,
    /// When a refused token last had the secret read (or tried); held during that read, so
    /// tokens refused meanwhile wait for its key rather than being refused by the old one.
    refusal_read: tokio::sync::Mutex<Option<Instant>>,
    retry_unread_every: Duration,
    /// While no key is held: when the last failed read began, and why it failed. Held
    /// during a read, so requests that come meanwhile wait for it rather than read too.
    unread: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for SecretsManagerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerKey").field("secret_id", &self.secret_id).finish_non_exhaustive()
    }
}

impl SecretsManagerKey {
    /// The key in the secret `secret_id` (a name or an ARN).
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            reread_after: REREAD_AFTER,
            reread_on_refusal_every: REREAD_ON_REFUSAL_AT_MOST_EVERY,
            held: Mutex::new(None),
            refusal_read: tokio::sync::Mutex::new(None),
            retry_unread_every: RETRY_UNREAD_AT_MOST_EVERY,
            unread: tokio::sync::Mutex::new(None),
        }
    }

    /// The same, read again after `after` instead of [`REREAD_AFTER`] (tests).
    pub fn reread_after(mut self, after: Duration) -> Self {
        self.reread_after = after;
        self
    }

    /// The same, read for a refused token at most every `every` instead of
    /// [`REREAD_ON_REFUSAL_AT_MOST_EVERY`] (tests).
    pub fn reread_on_refusal_at_most_every(mut self, every: Duration) -> Self {
        self.reread_on_refusal_every = every;
        self
    }

    /// The same, read again while no key is held at most every `every` instead of
    /// [`RETRY_UNREAD_AT_MOST_EVERY`] (tests).
    pub fn retry_unread_at_most_every(mut self, every: Duration) -> Self {
        self.retry_unread_every = every;
        self
    }

    /// The key held, if any.
    fn held(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The first key, read by one request at a time; a failure stands until
    /// `retry_unread_every` after it began, answering the requests that come meanwhile.
    async fn first_key(&self) -> Result<Secret> {
        let mut last = self.unread.lock().await;
        // Read by the request this one waited for.
        if let Some(h) = self.held() {
            return Ok(h.key);
        }
        if let Some((at, failed)) = last.as_ref()
            && at.elapsed() < self.retry_unread_every
        {
            return Err(Error::backend(
                "secretsmanager.GetSecretValue",
                format!("{failed} (the last read, a moment ago)"),
            ));
        }
        let started = Instant::now();
        // Marked only once it has failed: a read cut off half way (its request dropped, a
        // client gone) says nothing of the secret, and marked as failed it would have every
        // HS256 request refused for a while by an instance that could read it. The lock
        // still lets one read run at a time.
        match self.read().await {
            Ok(key) => Ok(self.hold(key, started)),
            Err(e) => {
                *last = Some((started, e.to_string()));
                Err(e)
            }
        }
    }

    /// Vouches for the held key from `started` (a failed re-read begun then), if it is still
    /// `copied`, the key that re-read began with; the key held after. A key another read put
    /// there meanwhile (a rotation's) stays, and is not replaced by the copy.
    fn vouch_for(&self, copied: Secret, started: Instant) -> Secret {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(h) if h.key == copied => {
                h.vouched_at = h.vouched_at.max(started);
                h.key.clone()
            }
            Some(h) => h.key.clone(),
            None => {
                *held = Some(Held { key: copied.clone(), read_began: started, vouched_at: started });
                copied
            }
        }
    }

    /// Holds `key`, read by a read begun at `started`, unless a read begun later already
    /// put its key there (a slow periodic read begun before a rotation, ending after the
    /// read for a refused token, put the old key back); the key held after.
    fn hold(&self, key: Secret, started: Instant) -> Secret {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_ref() {
            Some(newer) if newer.read_began > started => newer.key.clone(),
            _ => {
                *held = Some(Held { key: key.clone(), read_began: started, vouched_at: started });
                key
            }
        }
    }

    async fn read(&self) -> Result<Secret> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .customize()
            .config_override(
                aws_sdk_secretsmanager::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(READ_ATTEMPT_TIMEOUT)
                        .operation_timeout(READ_TIMEOUT)
                        .build(),
                ),
            )
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
        let started = Instant::now();
        match self.held() {
            Some(h) if h.vouched_at.elapsed() < self.reread_after => Ok(h.key),
            None => self.first_key().await,
            Some(Held { key: held, .. }) => match self.read().await {
                Ok(key) => Ok(self.hold(key, started)),
                Err(e) => {
                    // Vouched for from when this re-read began (not dated as read then):
                    // left as it was, every request after one failed re-read waited on
                    // Secrets Manager again (its retries and timeouts too), during the very
                    // outage that failed it.
                    tracing::warn!(error = %e, "could not re-read the token key; using the one held");
                    Ok(self.vouch_for(held, started))
                }
            },
        }
    }

    async fn key_after_refusal(&self) -> Result<Secret> {
        // Held across the read: tokens refused while it runs wait, then take the key it read
        // (one read for them all, and none refused by the old key meanwhile).
        let mut last = self.refusal_read.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.reread_on_refusal_every) {
            drop(last);
            return self.key().await;
        }
        let started = Instant::now();
        *last = Some(started);
        match self.read().await {
            Ok(key) => Ok(self.hold(key, started)),
            Err(e) => {
                // The held key stands, and is not read for again now (a due periodic read
                // would wait on the same outage twice in one request).
                match self.held() {
                    Some(Held { key, .. }) => {
                        tracing::warn!(error = %e, "could not read the token key again for a refused token; using the one held");
                        Ok(key)
                    }
                    None => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that is never read: these tests hand it keys as its reads would.
    fn unread() -> SecretsManagerKey {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .build();
        SecretsManagerKey::new(Client::from_conf(config), "unused")
    }

    /// A read begun before another, and ending after it, does not put its older key back.
    #[tokio::test]
    async fn a_key_read_earlier_does_not_replace_one_read_later() {
        let source = unread();
        let (before, after) = (Instant::now(), Instant::now() + Duration::from_millis(5));
        let new = Secret::new("the-key-read-later-0123456789abcdef0123");
        let old = Secret::new("the-key-read-earlier-0123456789abcdef01");
        assert!(source.hold(new.clone(), after) == new);
        assert!(source.hold(old, before) == new, "the later read's key is kept and given");
        assert!(source.held().is_some_and(|h| h.key == new));
        // A re-read begun with the old key, later still, that failed: the new key stays.
        let old = Secret::new("the-key-read-earlier-0123456789abcdef01");
        assert!(source.vouch_for(old, after + Duration::from_millis(5)) == new, "the new key is given");
        assert!(
            source.held().is_some_and(|h| h.key == new && h.read_began == after),
            "the new key is held, dated as read"
        );
    }

    /// A failed periodic re-read vouches for the old key a while longer, but does not make
    /// it newer than a rotated key read for a refused token by a read begun before it.
    #[tokio::test]
    async fn a_failed_re_read_does_not_outrank_a_rotated_key_read_before_it_began() {
        let source = unread();
        let t0 = Instant::now();
        let (refusal_began, periodic_began) = (t0 + Duration::from_millis(5), t0 + Duration::from_millis(10));
        let old = Secret::new("the-key-before-rotation-0123456789abcdef");
        let new = Secret::new("the-key-after-rotation-0123456789abcdef0");
        assert!(source.hold(old.clone(), t0) == old);
        // The periodic re-read, begun after the refusal's read, fails first...
        assert!(source.vouch_for(old.clone(), periodic_began) == old);
        // ...then the refusal's read ends with the rotated key: it is the one held and given.
        assert!(source.hold(new.clone(), refusal_began) == new, "the rotated key is given to the refused token");
        assert!(source.held().is_some_and(|h| h.key == new), "the rotated key is held");
    }
}
