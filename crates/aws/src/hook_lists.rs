//! A tenant's hooks as last read, kept for tenants with many of them.
//!
//! Ingest reads all of a tenant's hooks for every batch it ingests (decision 0009), with a
//! strongly consistent query on the tenant's one partition key. A thousand hooks of 2 KB
//! are 500 read units a query, and one partition serves at most 3,000 a second: six
//! batches a second would be all a big tenant could publish. So for a tenant whose hooks
//! fill a query, the list is kept, with the tenant's *hooks marker* it was read under:
//! every create, delete and replace of a hook writes a new marker, and a read of the
//! marker (one read unit) tells whether the list kept is still the tenant's
//! (docs/decisions/0020).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookbridge_core::hook::Hook;
use hookbridge_core::ids::TenantId;
use hookbridge_core::ports::RoutingList;

/// A tenant with at least this many hooks has its list kept.
pub(crate) const KEPT_FROM: usize = 16;
/// How long a list is trusted without a new marker: the bound on how stale a list can be
/// when a marker's write failed after its hook's (or the table was changed by hand). A
/// query every 10 s is a few hundred read units, against one a batch.
pub(crate) const KEPT_FOR: Duration = hookbridge_core::ports::ROUTING_LIST_STALE_AT_MOST;
/// The most hooks kept, of all tenants together (about 2 KB each in memory).
const MOST_HOOKS_KEPT: usize = 20_000;

struct Kept {
    /// The marker the list was read under; `None` until one was read before the list.
    marker: Option<String>,
    read_at: Instant,
    hooks: Vec<Arc<Hook>>,
}

/// The lists kept, by tenant.
#[derive(Default)]
pub(crate) struct HookLists {
    kept: Mutex<HashMap<TenantId, Kept>>,
}

impl HookLists {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Kept>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the tenant's list is kept: its marker is worth reading first.
    pub(crate) fn keeps(&self, tenant: &TenantId) -> bool {
        self.lock().contains_key(tenant)
    }

    /// The list kept for `tenant`, if it was read under `marker` and not too long ago.
    pub(crate) fn under(&self, tenant: &TenantId, marker: &str) -> Option<Vec<Arc<Hook>>> {
        let kept = self.lock();
        let k = kept.get(tenant)?;
        (k.marker.as_deref() == Some(marker) && k.read_at.elapsed() < KEPT_FOR).then(|| k.hooks.clone())
    }

    /// Keeps what a query read under `marker` (read before it), or forgets the tenant's
    /// list when it is short or names a hook that could not be read.
    pub(crate) fn read(&self, tenant: &TenantId, marker: Option<String>, list: &RoutingList) {
        let mut kept = self.lock();
        // A list with a hook this version cannot read is not kept: read afresh, it is routed
        // the same way, and kept, it would also need its unreadable hooks remembered.
        if list.hooks.len() < KEPT_FROM || !list.unreadable.is_empty() {
            kept.remove(tenant);
            return;
        }
        kept.insert(tenant.clone(), Kept { marker, read_at: Instant::now(), hooks: list.hooks.clone() });
        // The oldest lists go first when all of them together are too many hooks.
        while kept.values().map(|k| k.hooks.len()).sum::<usize>() > MOST_HOOKS_KEPT && kept.len() > 1 {
            let oldest = kept.iter().min_by_key(|(_, k)| k.read_at).map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                kept.remove(&t);
            }
        }
    }
}
