//! Bringing stored data up to the current formats: today, re-sealing hook secrets sealed
//! before blobs were bound to their hook. Idempotent, safe beside running stages (each
//! hook is replaced only if nobody changed it meanwhile; a hook that changed is read again).

use hookbridge_core::hook::{Hook, SecretsOwner};
use hookbridge_core::ports::Backend;
use hookbridge_core::{Error, Result};

/// Hooks read per page.
const PAGE: usize = 500;
/// Attempts at one hook that others keep changing.
const TRIES: usize = 5;

/// What a migration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Hooks read.
    pub hooks: usize,
    /// Hooks whose secrets were re-sealed, bound to them.
    pub resealed: usize,
    /// Hooks whose old secrets could not be opened, left as they are (their deliveries are
    /// cancelled, "the hook's secrets cannot be opened", until new ones are set).
    pub unopened: usize,
}

/// Re-seals, bound to their hook, the secrets of every hook still sealed in the unbound
/// format.
pub async fn reseal_secrets(b: &Backend) -> Result<Migrated> {
    let mut done = Migrated::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = b.hooks.scan(cursor.as_deref(), PAGE).await?;
        for hook in page.items {
            done.hooks += 1;
            let (tenant, id) = (hook.tenant.clone(), hook.id);
            match reseal_one(b, hook).await {
                Ok(true) => done.resealed += 1,
                Ok(false) => {}
                // One hook's blob that will never open must not stop the others' migration,
                // nor `hookbridge serve`, which migrates as it starts.
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::error!(tenant = %tenant, hook_id = %id, error = %e, "cannot open this hook's secrets to re-seal them; left as they are");
                    done.unopened += 1;
                }
                Err(e) => return Err(e),
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(done),
        }
    }
}

async fn reseal_one(b: &Backend, mut hook: Hook) -> Result<bool> {
    for _ in 0..TRIES {
        if b.sealer.is_current(&hook.sealed) {
            return Ok(false);
        }
        let owner = SecretsOwner::of(&hook);
        let secrets = match b.sealer.open(owner, &hook.sealed).await {
            // A newer release's blob (after a rollback): not this release's to re-seal, and
            // no reason to stop the migration, nor `hookbridge serve` with it.
            Err(Error::NewerFormat { .. }) => return Ok(false),
            opened => opened?,
        };
        let expected = hook.revision;
        let mut next = hook.clone();
        next.sealed = b.sealer.seal(owner, &secrets).await?;
        next.revision += 1;
        match b.hooks.replace(&next, expected).await {
            Ok(()) => return Ok(true),
            Err(Error::VersionConflict) => match b.hooks.get(&hook.tenant, hook.id).await? {
                Some(h) => hook = h,
                None => return Ok(false),
            },
            Err(e) => return Err(e),
        }
    }
    Err(Error::VersionConflict)
}
