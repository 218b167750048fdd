//! The one way to change a stored hook: read, change, write conditionally on the revision
//! read, and read again when someone else wrote in between.

use crate::Error;
use crate::ports::HookAccess;

use super::model::Hook;

/// Rounds of re-reading a hook that keeps changing underneath before a write gives up.
/// Writers to one hook are few (the tenant, the verifier, the workers recording health),
/// so five conflicts in a row mean something is wrong, not busy.
pub const UPDATE_ROUNDS: u32 = 5;

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modified<T> {
    /// The change was written; the hook as stored now.
    Written(Hook, T),
    /// The change found nothing to do on the hook as stored.
    Unchanged(Hook),
    /// The hook is gone.
    Deleted,
}

/// Applies `change` to `first` (a hook already read) and writes the result if the stored
/// revision is still the one read; on a conflict reads the hook again and re-applies the
/// change, at most `rounds` times ([`Error::VersionConflict`] after that).
///
/// `change` gets (a copy of) the hook as stored and returns the successor with a value
/// for the caller, or `None` when there is nothing to write, or an error to stop with; it
/// may await (to open or seal secrets). The successor's revision is set here; everything
/// else about it (`version`, `updated_at`) is the caller's to decide.
pub async fn modify<T, E, F, Fut>(
    store: &dyn HookAccess,
    first: Hook,
    rounds: u32,
    mut change: F,
) -> Result<Modified<T>, E>
where
    E: From<Error>,
    F: FnMut(Hook) -> Fut,
    Fut: Future<Output = Result<Option<(Hook, T)>, E>>,
{
    let mut current = first;
    for _ in 0..rounds.max(1) {
        let Some((mut next, value)) = change(current.clone()).await? else {
            return Ok(Modified::Unchanged(current));
        };
        next.revision = current.revision + 1;
        match store.replace(&next, current.revision).await {
            Ok(()) => return Ok(Modified::Written(next, value)),
            Err(Error::VersionConflict) => match store.get(&current.tenant, current.id).await? {
                Some(fresh) => current = fresh,
                None => return Ok(Modified::Deleted),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::VersionConflict.into())
}
