//! Shared rate state: a hook's delivery pace and a tenant's publish rate, kept where every
//! process of a deployment sees it (a table row), as [`crate::rate`] computes it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::rate::{self, Rate, from_micros, micros};

/// Whether units were admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted.
    Admitted,
    /// Refused; room comes after this wait.
    RetryAfter(Duration),
}

/// A change to a key's state: given the state (`None` for a key never used), the state to
/// store, or `None` to leave it as it is. A pure function, so a backend may apply it again
/// to a fresher state.
pub type Step = std::sync::Arc<dyn Fn(Option<i64>) -> Option<i64> + Send + Sync>;

/// Rate state per key (`hook:{id}:{schedule}`, `publish:{tenant}`): the time, in microseconds since
/// the epoch, its next unit may go. A backend stores it; the arithmetic is
/// [`crate::rate`]'s, here once for both backends.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Applies `step` to `key`'s state and stores what it returns, as one atomic change
    /// (re-applied on the fresh state if another process changed it meanwhile); returns the
    /// state the applied `step` saw.
    async fn update(&self, key: &str, step: Step) -> Result<Option<i64>>;

    /// Reserves `count` consecutive slots under `rate` for `key` and returns the first;
    /// slot `i` is `first + i / rate`. Never refuses: a busy key's slots lie in the future.
    ///
    /// An idle key's slots start at the clock as the change is applied (never before
    /// `now`), not as it was asked for: a change applied late (behind other writes, or a
    /// batch's hooks read first) would hand out slots already past, all sent at once, past
    /// the rate.
    async fn pace(&self, key: &str, rate: Rate, count: u32, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let never = vec![DateTime::<Utc>::MAX_UTC; count.try_into().unwrap_or(usize::MAX)];
        let slots = self.pace_before(key, rate, &never, now).await?;
        Ok(slots.first().copied().flatten().unwrap_or(now))
    }

    /// Reserves under `rate` for `key` one slot for each unit of `deadlines`, in order, as
    /// [`RateLimiter::pace`] reserves them, but only for a unit whose slot would come
    /// before its deadline: returns each unit's slot, `None` for one that would miss it.
    /// A unit that could not use its slot (a delivery whose records would be dropped by
    /// then) holds none, so the units after it, in this call or a later one, lose no time
    /// to it.
    async fn pace_before(
        &self,
        key: &str,
        rate: Rate,
        deadlines: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<DateTime<Utc>>>> {
        use std::sync::atomic::{AtomicI64, Ordering};
        let deadlines: std::sync::Arc<[i64]> = deadlines.iter().map(|d| micros(*d)).collect();
        let floor = micros(now);
        let applied_at = std::sync::Arc::new(AtomicI64::new(floor));
        let (noted, asked) = (applied_at.clone(), deadlines.clone());
        let step = move |next| {
            // As `pace`: slots start at the clock as the change is applied.
            let now = micros(Utc::now()).max(floor);
            noted.store(now, Ordering::Relaxed);
            rate::pace_before(next, now, rate, &asked).1
        };
        let seen = self.update(key, std::sync::Arc::new(step)).await?;
        let (slots, _) = rate::pace_before(seen, applied_at.load(Ordering::Relaxed), rate, &deadlines);
        Ok(slots.into_iter().map(|slot| slot.map(from_micros)).collect())
    }

    /// Forgets the turns given out on `key` past `now`: the schedule is left as an idle one
    /// (a hook's limit was set again, and the deliveries that held them take turns in the
    /// new schedule as they come up).
    async fn forget(&self, key: &str, now: DateTime<Utc>) -> Result<()> {
        let now = micros(now);
        self.update(key, std::sync::Arc::new(move |next| next.filter(|n| *n > now).map(|_| now))).await.map(|_| ())
    }

    /// Admits `count` units under `rate` with room for a burst of `burst`, or says how long
    /// to wait; a refusal uses nothing up.
    async fn admit(&self, key: &str, rate: Rate, burst: u32, count: u32, now: DateTime<Utc>) -> Result<Admission> {
        let now = micros(now);
        let seen =
            self.update(key, std::sync::Arc::new(move |next| rate::admit(next, now, rate, burst, count).ok())).await?;
        Ok(match rate::admit(seen, now, rate, burst, count) {
            Ok(_) => Admission::Admitted,
            Err(wait) => Admission::RetryAfter(wait),
        })
    }
}
