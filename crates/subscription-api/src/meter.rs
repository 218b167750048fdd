//! The per-tenant publish rate, kept cheap: an API process publishing for a tenant often
//! takes a lease of several events' worth of the tenant's rate from the shared limiter at
//! a time and counts against it locally, so a tenant publishing one event per call costs
//! a limiter write per [`LEASE_DIVISOR`]th of a second of its rate, not per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::{Admission, RateLimiter};
use hookbridge_core::settings::Quotas;
use tokio::time::Instant;

/// A lease is a twentieth of a second of the tenant's rate (50 events at the default
/// 1,000 a second).
pub const LEASE_DIVISOR: u32 = 20;
/// How long a lease's unused events stay usable: they were counted against the tenant
/// when leased, so keeping them longer would only let a tenant save up a burst.
pub const LEASE_LIFETIME: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Lease {
    left: u32,
    until: Instant,
}

/// Leases per tenant, in this process.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    leases: Mutex<HashMap<TenantId, Lease>>,
    /// One renewal at a time per tenant. Without it every call that found the lease spent
    /// took a lease of its own, and all but the last were dropped: a tenant publishing
    /// with many calls in flight had its burst spent on leases no call used, and was
    /// answered `429` well under its rate.
    renewing: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Meter {
    /// Takes `events` from the tenant's lease, leasing more from the limiter when it runs
    /// short. `Ok(None)` when admitted, `Ok(Some(wait))` when the tenant must wait.
    pub(crate) async fn take(
        &self,
        limiter: &dyn RateLimiter,
        quotas: Quotas,
        tenant: &TenantId,
        events: u32,
        now: DateTime<Utc>,
    ) -> hookbridge_core::Result<Option<Duration>> {
        if self.take_leased(tenant, events) {
            return Ok(None);
        }
        let gate = self.gate(tenant);
        let renewed = async {
            let _turn = gate.lock().await;
            // Another call may have renewed the lease while this one waited its turn.
            if self.take_leased(tenant, events) {
                return Ok(None);
            }
            self.renew(limiter, quotas, tenant, events, now).await
        }
        .await;
        let mut gates = self.renewing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if Arc::strong_count(&gate) == 2 {
            // No other call holds this tenant's gate: forget it, as leases are forgotten.
            gates.remove(tenant);
        }
        renewed
    }

    fn gate(&self, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.renewing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.entry(tenant.clone()).or_default().clone()
    }

    /// Leases more of the tenant's rate and takes `events` from it; what is left of the
    /// lease before (fewer than `events`) is kept.
    async fn renew(
        &self,
        limiter: &dyn RateLimiter,
        quotas: Quotas,
        tenant: &TenantId,
        events: u32,
        now: DateTime<Utc>,
    ) -> hookbridge_core::Result<Option<Duration>> {
        let key = format!("publish:{tenant}");
        let (rate, burst) = (quotas.publish_rate, quotas.publish_burst);
        // More than the call's events only for a process that used up its last lease within
        // its lifetime. The rest of a lease is charged to the tenant and unusable elsewhere:
        // had every process that saw a call taken a whole lease, a tenant whose calls were
        // spread over many API processes (Lambda instances) had its burst spent on leases
        // no call used, and was answered `429` well under its rate.
        let hot = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(tenant);
        // Never more than the burst at once: the limiter admits a request over the burst
        // when its bucket is full (so a call larger than the burst can ever go), and a lease
        // of a twentieth of a second over it let one process publish that much at once.
        let lease = if hot { (rate.get() / LEASE_DIVISOR).min(burst).max(events) } else { events };
        let got = match limiter.admit(&key, rate, burst, lease, now).await? {
            Admission::Admitted => lease,
            // Not room for a whole lease: perhaps for just these events.
            Admission::RetryAfter(_) if lease > events => match limiter.admit(&key, rate, burst, events, now).await? {
                Admission::Admitted => events,
                Admission::RetryAfter(wait) => return Ok(Some(wait)),
            },
            Admission::RetryAfter(wait) => return Ok(Some(wait)),
        };
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = Instant::now() + LEASE_LIFETIME;
        let lease = leases.entry(tenant.clone()).or_insert(Lease { left: 0, until });
        // Renewed leases live as long as a fresh one, leftovers included: the leftover is
        // less than one call's events, not a saved-up burst.
        *lease = Lease { left: lease.left + got - events, until };
        Ok(None)
    }

    fn take_leased(&self, tenant: &TenantId, events: u32) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        leases.retain(|_, l| l.until > now);
        match leases.get_mut(tenant) {
            Some(l) if l.left >= events => {
                l.left -= events;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::rate::Rate;
    use hookbridge_testkit::{EmbeddedHarness, Harness};

    use super::*;

    fn quotas(rate: u32, burst: u32) -> Quotas {
        Quotas { publish_rate: Rate::per_second(rate), publish_burst: burst, ..Quotas::default() }
    }

    /// Many calls in flight when the lease runs out renew it once, not once each: every
    /// event within the burst is admitted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_in_flight_together_share_one_renewal_and_stay_within_the_burst() {
        let h = EmbeddedHarness::start().await;
        let limiter = h.backend().limiter.clone();
        let meter = Arc::new(Meter::default());
        let tenant: TenantId = "busy".parse().unwrap();
        let now = Utc::now();
        // A lease is 5 events; 100 may go at once.
        let q = quotas(100, 100);
        let calls: Vec<_> = (0..60)
            .map(|_| {
                let (meter, limiter, tenant) = (meter.clone(), limiter.clone(), tenant.clone());
                tokio::spawn(async move { meter.take(limiter.as_ref(), q, &tenant, 1, now).await.unwrap() })
            })
            .collect();
        let mut refused = 0;
        for c in calls {
            refused += usize::from(c.await.unwrap().is_some());
        }
        assert_eq!(refused, 0, "60 events within a burst of 100 were refused");

        // And the burst still holds: of 100 more at the same instant, the 40 left go.
        let mut admitted = 0;
        for _ in 0..100 {
            admitted += usize::from(meter.take(limiter.as_ref(), q, &tenant, 1, now).await.unwrap().is_none());
        }
        assert_eq!(admitted, 40, "admitted beyond the first 60");
        assert!(meter.renewing.lock().unwrap().is_empty(), "a tenant's gate outlived its renewals");
    }

    /// A call on a process that has no lease of the tenant's takes only its own events from
    /// the limiter: forty processes, one call each, all go within a burst of 100 (with a
    /// lease of 5 each, the first twenty spent the burst and the other twenty were refused).
    /// A process that uses its lease up takes a whole one next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_spread_over_many_processes_do_not_strand_the_burst_in_leases() {
        let h = EmbeddedHarness::start().await;
        let limiter = h.backend().limiter.clone();
        let tenant: TenantId = "spread".parse().unwrap();
        let now = Utc::now();
        let q = quotas(100, 100);
        let mut admitted = 0;
        for _ in 0..40 {
            let process = Meter::default();
            admitted += usize::from(process.take(limiter.as_ref(), q, &tenant, 1, now).await.unwrap().is_none());
        }
        assert_eq!(admitted, 40, "40 events within a burst of 100");

        let hot = Meter::default();
        for _ in 0..2 {
            assert_eq!(hot.take(limiter.as_ref(), q, &tenant, 1, now).await.unwrap(), None);
        }
        assert_eq!(hot.leases.lock().unwrap()[&tenant].left, 4, "the second call leased 5 events and used one");
    }

    /// A lease is never more than the burst: at 1,000 events a second with a burst of 10,
    /// a twentieth of a second is 50 events, and one process could publish 50 at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_is_never_more_than_the_burst() {
        let h = EmbeddedHarness::start().await;
        let limiter = h.backend().limiter.clone();
        let meter = Meter::default();
        let tenant: TenantId = "bursty".parse().unwrap();
        let now = Utc::now();
        let q = quotas(1000, 10);
        let mut admitted = 0;
        for _ in 0..30 {
            admitted += usize::from(meter.take(limiter.as_ref(), q, &tenant, 1, now).await.unwrap().is_none());
        }
        assert_eq!(admitted, 10, "one event at a time, at one instant, up to the burst");
        // A call larger than the burst still goes once the bucket is full again.
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(Meter::default().take(limiter.as_ref(), q, &tenant, 12, later).await.unwrap(), None);
    }
}
