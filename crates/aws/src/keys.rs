//! The single table's keys and attribute helpers. One table, string keys `PK`/`SK`, TTL on
//! `expires_at` (epoch seconds).
//!
//! | item            | PK            | SK                         |
//! | --------------- | ------------- | -------------------------- |
//! | hook            | `T#{tenant}`  | `H#{hook_id}`              |
//! | hook name guard | `T#{tenant}`  | `N#{name}`                 |
//! | hook count      | `T#{tenant}`  | `C#hooks`                  |
//! | delivery        | `H#{hook_id}#{shard}` | `D#{delivery_id}`  |
//! | delivery update | `H#{hook_id}#{shard}` | `D#{delivery_id}#U#{ulid}` |
//! | replay job      | `H#{hook_id}` | `R#{replay_id}`            |
//! | event           | `T#{tenant}`  | `E#{event_id}`             |
//! | idempotency key | `T#{tenant}`  | `I#{key}`                  |
//! | idempotency key (moving) | `I#{tenant}#{key}` | `I`         |
//! | rate state      | `R#{key}`     | `R`                        |
//! | declared type   | `T#{tenant}`  | `Y#{event_type}`           |
//! | seen type       | `T#{tenant}`  | `S#{event_type}`           |
//! | portal link     | `P#{sha256}`  | `L`                        |
//! | console session | `P#{sha256}`  | `S`                        |
//!
//! A hook's deliveries spread over 32 shards (`{shard}` from the delivery id's random
//! bits) so one busy hook never meets DynamoDB's per-partition write limit; deliveries
//! written before sharding stay under `H#{hook_id}` until they expire, and reads include it.
//! Envelopes are moving to partitions of their own, `E#{tenant}#{event_id}`/`E`, over two
//! releases (decision 0020): this one writes them under the tenant and reads both.
//! Idempotency keys (and producers' event ids) are moving the same way to
//! `I#{tenant}#{key}`/`I` (decision 0027): this release claims under the tenant, and after
//! a claim looks for one made in the new place.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use hookbridge_core::{Error, Result};

/// The partition key attribute.
pub const PK: &str = "PK";
/// The sort key attribute.
pub const SK: &str = "SK";
/// The TTL attribute, epoch seconds. DynamoDB deletes late (up to days) and the emulator
/// never does, so every read filters on it too.
pub const EXPIRES_AT: &str = "expires_at";
/// The item's JSON document.
pub const DOC: &str = "doc";
/// The hook's revision, for conditional writes.
pub const REVISION: &str = "revision";

/// An item.
pub type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A key.
pub(crate) fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// A string attribute of an item.
pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| Error::corrupt("an item", format!("no string attribute {name}")))
}

/// A number attribute of an item, if present.
pub(crate) fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

/// Whether the item's TTL has passed.
pub(crate) fn expired(item: &Item, now_secs: i64) -> bool {
    get_n(item, EXPIRES_AT).is_some_and(|t| t <= now_secs)
}

/// The item's JSON document, parsed.
pub(crate) fn doc<T: serde::de::DeserializeOwned>(item: &Item, what: &'static str) -> Result<T> {
    serde_json::from_str(get_s(item, DOC)?).map_err(|e| Error::corrupt(what, e))
}

/// JSON for a document attribute.
pub(crate) fn to_doc<T: serde::Serialize>(value: &T) -> Result<AttributeValue> {
    serde_json::to_string(value).map(AttributeValue::S).map_err(|e| Error::backend("dynamodb.encode", e))
}

pub(crate) fn tenant_pk(tenant: &impl std::fmt::Display) -> String {
    format!("T#{tenant}")
}

pub(crate) fn hook_pk(hook: &impl std::fmt::Display) -> String {
    format!("H#{hook}")
}
