//! Shared rate state: a hook's delivery pace and a tenant's publish rate, kept where every
//! process of a deployment sees it (a table row), as [`crate::rate`] computes it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::rate::Rate;

/// Whether units were admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted.
    Admitted,
    /// Refused; room comes after this wait.
    RetryAfter(Duration),
}

/// Rate state per key (`hook:{id}`, `tenant:{id}`).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Reserves `count` consecutive slots under `rate` for `key` and returns the first;
    /// slot `i` is `first + i / rate`. Never refuses: a busy key's slots lie in the future.
    async fn pace(&self, key: &str, rate: Rate, count: u32, now: DateTime<Utc>) -> Result<DateTime<Utc>>;

    /// Admits `count` units under `rate` with room for a burst of `burst`, or says how long
    /// to wait; a refusal uses nothing up.
    async fn admit(&self, key: &str, rate: Rate, burst: u32, count: u32, now: DateTime<Utc>) -> Result<Admission>;
}
