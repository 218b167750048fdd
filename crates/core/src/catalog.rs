//! A tenant's event types: those it declared (a description, optionally a JSON Schema its
//! events must satisfy) and those seen on the bus lately. Consoles list them and preview
//! which a hook's patterns match; publishing checks an event against its declared schema.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a type stays known after its last event.
pub const SEEN_FOR: Duration = Duration::days(30);
/// The most types a tenant may declare.
pub const MAX_DECLARED: usize = 500;
/// The most seen (not declared) types a listing names, the first by name: every distinct
/// `detail-type` a tenant publishes is seen, so their number has no other bound.
pub const MAX_SEEN_LISTED: usize = 1000;
/// The largest schema accepted, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The most a tenant's declared schemas and descriptions may come to together, as JSON
/// text: the listing of its types carries them all, and a Lambda function answers at most
/// 6 MB (500 of the largest schemas would be 32 MB, and as many compiled in every API
/// process that checks them).
pub const MAX_SCHEMAS_BYTES: usize = 4 * 1024 * 1024;
/// The longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// The longest event type name, as the bus allows (`detail-type`).
pub const MAX_NAME_LEN: usize = 128;

/// A type the tenant declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredType {
    /// The event type (`detail-type`).
    pub name: String,
    /// What it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema (2020-12) every published `detail` of this type must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// When it was last declared.
    pub updated_at: DateTime<Utc>,
}

/// A type the platform knows of for a tenant: declared, seen, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownType {
    /// The event type.
    pub name: String,
    /// Its declaration, if the tenant made one.
    pub declared: Option<DeclaredType>,
    /// When an event of it last went through, if within [`SEEN_FOR`].
    pub last_seen: Option<DateTime<Utc>>,
}

/// Why a type name was refused.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1-{MAX_NAME_LEN} characters"));
    }
    if name.contains('*') || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces or `*`".to_owned());
    }
    // It is a path segment (`/v1/event-types/{name}`), which API Gateway decodes before the
    // API sees it: these would not arrive as written.
    if name.contains(['/', '?', '#', '%']) {
        return Err(NOT_A_PATH_SEGMENT.to_owned());
    }
    Ok(())
}

/// Why a name holding a character that would not arrive as written in its path segment is
/// refused (here, and by the API for a path API Gateway handed on decoded).
pub const NOT_A_PATH_SEGMENT: &str = "must not hold `/`, `?`, `#` or `%`: it is a path segment";

/// Declared and seen types merged by name, sorted by name: every declared one, and of the
/// types only seen the first [`MAX_SEEN_LISTED`] by name. `seen` is read in name order,
/// [`seen_to_read`] of them, so that declared types seen too cannot crowd out the others.
pub fn merge(declared: Vec<DeclaredType>, seen: Vec<(String, DateTime<Utc>)>) -> Vec<KnownType> {
    let mut by_name: std::collections::BTreeMap<String, KnownType> = std::collections::BTreeMap::new();
    for d in declared {
        by_name.insert(d.name.clone(), KnownType { name: d.name.clone(), declared: Some(d), last_seen: None });
    }
    let mut seen_only = 0;
    for (name, at) in seen {
        if let Some(entry) = by_name.get_mut(&name) {
            entry.last_seen = entry.last_seen.max(Some(at));
        } else if seen_only < MAX_SEEN_LISTED {
            seen_only += 1;
            by_name.insert(name.clone(), KnownType { name, declared: None, last_seen: Some(at) });
        }
    }
    by_name.into_values().collect()
}

/// How many seen types to read (in name order) to list [`MAX_SEEN_LISTED`] that are only
/// seen, when `declared` types are declared: each may be among them.
pub fn seen_to_read(declared: usize) -> usize {
    MAX_SEEN_LISTED + declared
}

/// How often one process records a type as seen again: the last-seen time is then at most
/// this stale, and an event store pays one small write per type and hour, not per event.
pub const SEEN_REFRESH: Duration = Duration::hours(1);

/// The types this process recorded as seen lately, by tenant.
#[derive(Debug, Default)]
pub struct SeenMemo(std::sync::Mutex<std::collections::HashMap<(String, String), DateTime<Utc>>>);

/// Entries kept before the memo starts over (a flood of distinct types cannot grow it).
const SEEN_MEMO_MAX: usize = 100_000;

impl SeenMemo {
    /// Of `types` (of `tenant`'s events kept at `now`), those to record as seen now; they
    /// are then not due again for [`SEEN_REFRESH`].
    pub fn due<'a>(&self, tenant: &str, types: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) -> Vec<String> {
        let mut memo = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if memo.len() > SEEN_MEMO_MAX {
            memo.clear();
        }
        let mut out: Vec<String> = Vec::new();
        for t in types {
            let key = (tenant.to_owned(), t.to_owned());
            if memo.get(&key).is_none_or(|at| now - *at >= SEEN_REFRESH) && !out.iter().any(|o| o == t) {
                memo.insert(key, now);
                out.push(t.to_owned());
            }
        }
        out
    }

    /// `written`, the outcome of writing `names` (handed out by [`SeenMemo::due`] at `at`),
    /// after taking them back when it failed.
    pub fn settled<T, E>(
        &self,
        tenant: &str,
        names: &[String],
        at: DateTime<Utc>,
        written: Result<T, E>,
    ) -> Result<T, E> {
        if written.is_err() {
            self.forget(tenant, names, at);
        }
        written
    }

    /// Takes back what [`SeenMemo::due`] at `at` handed out for `names`, whose write failed:
    /// they are due again at once, not an hour later.
    pub fn forget(&self, tenant: &str, names: &[String], at: DateTime<Utc>) {
        let mut memo = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            let key = (tenant.to_owned(), name.clone());
            if memo.get(&key) == Some(&at) {
                memo.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_event_types_not_patterns() {
        assert!(check_name("admin.USER-CREATE").is_ok());
        assert!(check_name("access.*").is_err());
        assert!(check_name("a b").is_err());
        for addressed_otherwise in ["a/b", "a?b", "a#b", "a%3Fb"] {
            assert!(check_name(addressed_otherwise).is_err(), "{addressed_otherwise}");
        }
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn a_type_is_due_once_an_hour_per_tenant() {
        let memo = SeenMemo::default();
        let now = Utc::now();
        assert_eq!(memo.due("acme", ["a", "b", "a"], now), ["a", "b"]);
        assert!(memo.due("acme", ["a"], now + Duration::minutes(59)).is_empty());
        assert_eq!(memo.due("globex", ["a"], now), ["a"]);
        assert_eq!(memo.due("acme", ["a"], now + SEEN_REFRESH), ["a"]);
    }

    #[test]
    fn a_type_whose_write_failed_is_due_again_at_once() {
        let memo = SeenMemo::default();
        let now = Utc::now();
        let due = memo.due("acme", ["a", "b"], now);
        memo.forget("acme", &due[..1], now);
        assert_eq!(memo.due("acme", ["a", "b"], now + Duration::seconds(1)), ["a"]);
        // A later success is not taken back by an older failure.
        let later = now + Duration::seconds(1);
        memo.forget("acme", &due[..1], now);
        assert!(memo.due("acme", ["a"], later + Duration::seconds(1)).is_empty());
    }

    #[test]
    fn declared_and_seen_merge_by_name() {
        let now = Utc::now();
        let d = DeclaredType { name: "b".into(), description: Some("B".into()), schema: None, updated_at: now };
        let merged = merge(vec![d.clone()], vec![("a".into(), now), ("b".into(), now)]);
        let many: Vec<(String, DateTime<Utc>)> = (0..seen_to_read(1)).map(|i| (format!("t{i:04}"), now)).collect();
        let first = DeclaredType { name: "t0000".into(), ..d.clone() };
        let listed = merge(vec![first], many.clone());
        assert_eq!(listed.len(), 1 + MAX_SEEN_LISTED, "the declared one and a thousand only seen");
        assert_eq!(listed.iter().filter(|k| k.declared.is_none()).count(), MAX_SEEN_LISTED);
        assert_eq!(merge(vec![], many).len(), MAX_SEEN_LISTED, "of those only seen, the first thousand");
        assert_eq!(merged.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((merged[0].declared.is_none(), merged[1].declared.as_ref()), (true, Some(&d)));
        assert_eq!(merged[1].last_seen, Some(now));
    }
}
