//! Rate state on DynamoDB: one item per key, changed by conditional writes so every
//! Lambda instance shares it. The last value this process saw is tried first, so a key
//! used mostly by one instance costs one write per reservation; a stale guess costs a
//! consistent read and another write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use hookbridge_core::ports::{RateLimiter, Step};
use hookbridge_core::rate::STATE_KEPT;
use hookbridge_core::{Error, Result};

use crate::dynamo::Table;
use crate::keys::{EXPIRES_AT, Item, get_n, key, n};

/// The state's attribute: when the key's next unit may go, in microseconds.
const NEXT: &str = "next_us";
/// The mark of the write that stored the state: a write the SDK sent again (its answer
/// lost after DynamoDB applied it) finds its own mark, and is this call's, not a change
/// made underneath to be stepped again (which charged a tenant twice, and refused it).
const BY: &str = "by";
/// Conditional writes tried before giving up on a contended key. Many API instances
/// publishing for one tenant at once contend on its key; with jittered waits between
/// rounds they spread out instead of colliding again.
const ROUNDS: u32 = 16;

/// When the table's TTL may delete a key's state `next_us`: [`STATE_KEPT`] after its next
/// unit is due (a state in the past is the same as none), so the keys of deleted hooks and
/// of tenants no longer publishing do not stay for ever.
fn expires_at(next_us: i64) -> i64 {
    next_us.div_euclid(1_000_000).max(chrono::Utc::now().timestamp()) + STATE_KEPT.as_secs() as i64
}

pub(crate) struct DynamoRateLimiter {
    table: Table,
    seen: Seen,
}

/// The state each key had when this process last wrote or read it: a guess that saves a
/// read (a wrong one costs a failed conditional write and the read). A warm instance can
/// live for hours and touch every hook and tenant of the deployment, so past
/// [`SEEN_AT_MOST`] keys it starts over rather than grow for ever.
#[derive(Default)]
struct Seen(Mutex<HashMap<String, Option<i64>>>);

/// Keys [`Seen`] holds before it starts over: a few megabytes.
const SEEN_AT_MOST: usize = 50_000;

impl Seen {
    fn get(&self, key_name: &str) -> Option<Option<i64>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key_name).copied()
    }

    fn remember(&self, key_name: &str, state: Option<i64>) {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= SEEN_AT_MOST && !seen.contains_key(key_name) {
            seen.clear();
        }
        seen.insert(key_name.to_owned(), state);
    }
}

impl DynamoRateLimiter {
    pub(crate) fn new(table: Table) -> Self {
        Self { table, seen: Seen::default() }
    }

    fn remember(&self, key_name: &str, state: Option<i64>) {
        self.seen.remember(key_name, state);
    }

    fn item_key(key_name: &str) -> Item {
        key(format!("R#{key_name}"), "R".to_owned())
    }

    async fn read(&self, key_name: &str) -> Result<Option<i64>> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(Self::item_key(key_name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.GetItem", e))?;
        Ok(out.item.as_ref().and_then(|i| get_n(i, NEXT)))
    }

    /// Writes `new` if the stored state is still `old` (or is this very write, stored
    /// already); whether it was.
    async fn swap(&self, key_name: &str, old: Option<i64>, new: i64) -> Result<bool> {
        let mark = format!("{:032x}", rand::random::<u128>());
        let mut req = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(Self::item_key(key_name)))
            .update_expression("SET #n = :new, #by = :by, #e = :e")
            .expression_attribute_names("#n", NEXT)
            .expression_attribute_names("#by", BY)
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(":new", n(new))
            .expression_attribute_values(":e", n(expires_at(new)))
            .expression_attribute_values(":by", crate::keys::s(mark));
        let mine = "(#n = :new AND #by = :by)";
        req = match old {
            None => req.condition_expression(format!("attribute_not_exists(#n) OR {mine}")),
            Some(o) => {
                req.condition_expression(format!("#n = :old OR {mine}")).expression_attribute_values(":old", n(o))
            }
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(Error::backend("dynamodb.UpdateItem", e)),
        }
    }
}

#[async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn update(&self, key_name: &str, step: Step) -> Result<Option<i64>> {
        let guess = self.seen.get(key_name);
        let mut guessed = guess.is_some();
        let mut current = match guess {
            Some(g) => g,
            None => self.read(key_name).await?,
        };
        for round in 0..ROUNDS {
            let Some(new) = step(current) else {
                if guessed {
                    // Refused on what this process saw last: the key may have moved on
                    // since, and the wait is to be told from where it is.
                    guessed = false;
                    current = self.read(key_name).await?;
                    self.remember(key_name, current);
                    continue;
                }
                return Ok(current);
            };
            guessed = false;
            if self.swap(key_name, current, new).await? {
                self.remember(key_name, Some(new));
                return Ok(current);
            }
            // Full jitter: contenders that collided wait different times.
            let ceiling = 5u64 << round.min(5);
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..=ceiling))).await;
            current = self.read(key_name).await?;
        }
        Err(Error::backend("dynamodb.UpdateItem", format!("rate state of {key_name} kept changing underneath")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_state_expires_an_hour_after_it_is_due() {
        let now = chrono::Utc::now().timestamp();
        let ahead = (now + 600) * 1_000_000 + 999_999;
        assert_eq!(expires_at(ahead), now + 600 + 3600, "an hour after the last slot reserved");
        let t = expires_at((now - 7200) * 1_000_000);
        assert!((now + 3600..=now + 3601).contains(&t), "never already expired when written: {t}");
    }

    #[test]
    fn the_states_seen_are_bounded() {
        let seen = Seen::default();
        for i in 0..SEEN_AT_MOST * 2 + 7 {
            seen.remember(&format!("hook:{i}"), Some(i as i64));
        }
        let held = seen.0.lock().unwrap().len();
        assert!(held <= SEEN_AT_MOST, "{held} keys held");
        let last = format!("hook:{}", SEEN_AT_MOST * 2 + 6);
        assert_eq!(seen.get(&last), Some(Some((SEEN_AT_MOST * 2 + 6) as i64)), "the latest is kept");
        seen.remember(&last, None);
        assert_eq!(seen.get(&last), Some(None), "a key held is written over, not a reason to start over");
    }
}
