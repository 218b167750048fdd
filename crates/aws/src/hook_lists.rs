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
/// The most the lists kept may take, of all tenants together, counted as their hooks take
/// stored. Counted in hooks (20,000, "about 2 KB each") it let a warm function keep
/// gigabytes: a hook may take 350 KiB, and the functions have 256 MB.
const MOST_BYTES_KEPT: usize = 32 * 1024 * 1024;

struct Kept {
    /// The marker the list was read under; `None` until one was read before the list.
    marker: Option<String>,
    read_at: Instant,
    hooks: Vec<Arc<Hook>>,
    /// What its hooks take stored.
    bytes: usize,
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

    /// The list kept for `tenant` and what its hooks take stored, if it was read under
    /// `marker` and not too long ago.
    pub(crate) fn under(&self, tenant: &TenantId, marker: &str) -> Option<(Vec<Arc<Hook>>, usize)> {
        let kept = self.lock();
        let k = kept.get(tenant)?;
        (k.marker.as_deref() == Some(marker) && k.read_at.elapsed() < KEPT_FOR).then(|| (k.hooks.clone(), k.bytes))
    }

    /// Keeps what a query read under `marker` (read before it), or forgets the tenant's
    /// list when it is short or names a hook that could not be read.
    pub(crate) fn read(&self, tenant: &TenantId, marker: Option<String>, list: &RoutingList) {
        // A list with a hook this version cannot read is not kept: read afresh, it is routed
        // the same way, and kept, it would also need its unreadable hooks remembered.
        let keepable = list.hooks.len() >= KEPT_FROM && list.unreadable.is_empty();
        // Measured before the lock: it writes each hook out again, and other tenants'
        // batches ask for their lists meanwhile.
        let bytes =
            if keepable { list.hooks.iter().fold(0, |n: usize, h| n.saturating_add(h.stored_size())) } else { 0 };
        let mut kept = self.lock();
        // A list past the whole budget alone is read afresh every time instead.
        if !keepable || bytes > MOST_BYTES_KEPT {
            kept.remove(tenant);
            return;
        }
        kept.insert(tenant.clone(), Kept { marker, read_at: Instant::now(), hooks: list.hooks.clone(), bytes });
        // The oldest lists go first when all of them together take too much.
        while kept.values().fold(0, |n: usize, k| n.saturating_add(k.bytes)) > MOST_BYTES_KEPT && kept.len() > 1 {
            let oldest = kept.iter().min_by_key(|(_, k)| k.read_at).map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                kept.remove(&t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::hook::{HookDraft, HookState, NetworkPolicy, SealedSecrets, ValidationContext};

    use super::*;

    /// A list of `n` hooks of `tenant`, each taking about `bytes` stored.
    fn list_of(tenant: &TenantId, n: usize, bytes: usize) -> RoutingList {
        let draft: HookDraft = serde_json::from_str(r#"{"name":"h","url":"https://r.example/"}"#).unwrap();
        let (config, _) = draft.validate(ValidationContext { network: &NetworkPolicy::default() }, None).unwrap();
        let now = chrono::Utc::now();
        let hook = |_| {
            Arc::new(Hook {
                newer: Default::default(),
                id: hookbridge_core::ids::HookId::generate(),
                tenant: tenant.clone(),
                state: HookState::new_for(&config),
                config: config.clone(),
                // Sealed secrets are stored as base64: three bytes take four.
                sealed: SealedSecrets(vec![0; bytes * 3 / 4]),
                created_by: "t".into(),
                created_at: now,
                updated_at: now,
                version: 1,
                revision: 1,
            })
        };
        RoutingList { hooks: (0..n).map(hook).collect(), unreadable: Vec::new() }
    }

    #[test]
    fn the_lists_kept_are_bounded_by_what_their_hooks_take() {
        let lists = HookLists::default();
        let tenants: Vec<TenantId> = (0..4).map(|i| format!("t{i}").parse().unwrap()).collect();
        // Sixteen hooks of about 800 KiB: two fifths of the budget each.
        let large = MOST_BYTES_KEPT * 2 / 5 / KEPT_FROM;
        for t in &tenants[..2] {
            lists.read(t, Some("m".into()), &list_of(t, KEPT_FROM, large));
        }
        assert!(lists.keeps(&tenants[0]) && lists.keeps(&tenants[1]));
        lists.read(&tenants[2], Some("m".into()), &list_of(&tenants[2], KEPT_FROM, large));
        assert!(!lists.keeps(&tenants[0]), "the oldest list made room");
        assert!(lists.keeps(&tenants[1]) && lists.keeps(&tenants[2]));
        let kept: usize = lists.lock().values().map(|k| k.bytes).sum();
        assert!(kept <= MOST_BYTES_KEPT, "{kept}");
        // A list past the whole budget is not kept, and leaves the others be.
        lists.read(&tenants[3], Some("m".into()), &list_of(&tenants[3], KEPT_FROM, MOST_BYTES_KEPT / KEPT_FROM + 1024));
        assert!(!lists.keeps(&tenants[3]));
        assert!(lists.keeps(&tenants[1]) && lists.keeps(&tenants[2]));
        // Small hooks, as most are: a list of two thousand is kept.
        lists.read(&tenants[0], Some("m".into()), &list_of(&tenants[0], 2000, 2048));
        assert!(lists.keeps(&tenants[0]));
    }
}
