//! The per-tenant publish rate, kept cheap: each API process takes a lease of several
//! events' worth of the tenant's rate from the shared limiter at a time and counts
//! against it locally, so a tenant publishing one event per call costs a limiter write
//! per [`LEASE_DIVISOR`]th of a second of its rate, not per call.

use std::collections::HashMap;
use std::sync::Mutex;
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
        let key = format!("publish:{tenant}");
        let lease = (quotas.publish_rate.get() / LEASE_DIVISOR).max(events);
        let (rate, burst) = (quotas.publish_rate, quotas.publish_burst);
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
        leases.insert(tenant.clone(), Lease { left: got - events, until: Instant::now() + LEASE_LIFETIME });
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
