//! The in-process bus: an event is accepted and routed to its rules' queues in one
//! transaction, so a published event is never lost between the bus and the queue.

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_core::Result;
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::ids::EventId;
use hookbridge_core::ports::{Bus, OutgoingMessage, Rule, RulePattern, SourceMatch};
use rusqlite::params;
use serde_json::Value;

use crate::db::Db;
use crate::error::sql;
use crate::queue;

/// Stores a rule (replacing one of the same name).
pub(crate) async fn put_rule(db: &Db, rule: &Rule) -> Result<()> {
    let (name, pattern, target) = (rule.name.clone(), rule.pattern.to_event_pattern(), rule.target_queue.clone());
    db.write(move |c| {
        c.execute(
            "INSERT INTO rules (name, pattern, target) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET pattern = excluded.pattern, target = excluded.target",
            params![name, pattern, target],
        )
        .map(|_| ())
        .map_err(sql("rules.put"))
    })
    .await
}

/// Reads back a pattern written by [`RulePattern::to_event_pattern`].
fn parse_pattern(text: &str) -> Option<RulePattern> {
    let v: Value = serde_json::from_str(text).ok()?;
    let source = match v.get("source")?.get(0)? {
        Value::String(s) => SourceMatch::Exactly(s.clone()),
        obj => SourceMatch::AnythingBut(obj.get("anything-but")?.as_str()?.to_owned()),
    };
    let detail_types = match v.get("detail-type") {
        Some(list) => list.as_array()?.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect(),
        None => Vec::new(),
    };
    Some(RulePattern { source, detail_types })
}

/// The embedded bus.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    db: Db,
    account: String,
    region: String,
}

impl EmbeddedBus {
    /// A bus writing `account` and `region` into envelopes.
    pub fn new(db: Db, account: &str, region: &str) -> Self {
        Self { db, account: account.to_owned(), region: region.to_owned() }
    }

    /// Adds a rule, as `init` does for the platform's rules; tests add their own to watch
    /// operational events.
    pub async fn put_rule(&self, rule: &Rule) -> Result<()> {
        put_rule(&self.db, rule).await
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, entries: Vec<BusEntry>) -> Result<Vec<EventId>> {
        entries.iter().try_for_each(BusEntry::fits)?;
        let now = Utc::now();
        let envelopes: Vec<_> = entries
            .into_iter()
            .map(|e| e.into_envelope(EventId::generate(), &self.account, &self.region, now))
            .collect();
        let ids: Vec<EventId> = envelopes.iter().map(|e| e.id.clone()).collect();
        // Each event in its tenant's group, so one tenant's backlog in a queue does not hold
        // back the others' events.
        let routed: Vec<(String, String, String, Option<String>)> = envelopes
            .iter()
            .map(|e| {
                let tenant = e.routing().ok().map(|r| r.tenant.to_string());
                (e.source.clone(), e.detail_type.clone(), e.to_body(), tenant)
            })
            .collect();
        let queues = self.db.clone();
        let targets = self
            .db
            .write(move |c| {
                let rules: Vec<(RulePattern, String)> = {
                    let mut stmt = c.prepare_cached("SELECT pattern, target FROM rules").map_err(sql("bus.rules"))?;
                    let rows = stmt
                        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                        .map_err(sql("bus.rules"))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(sql("bus.rules"))?;
                    rows.into_iter().filter_map(|(p, t)| parse_pattern(&p).map(|p| (p, t))).collect()
                };
                let mut touched = Vec::new();
                for (source, detail_type, body, tenant) in &routed {
                    for (pattern, target) in &rules {
                        if pattern.matches(source, detail_type) {
                            let m = OutgoingMessage { group: tenant.clone(), ..OutgoingMessage::now(body.clone()) };
                            queue::insert(c, target, &[m])?;
                            touched.push(target.clone());
                        }
                    }
                }
                Ok(touched)
            })
            .await?;
        for t in targets {
            queues.waker(&t).notify_waiters();
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_patterns_read_back() {
        for p in hookbridge_core::topology::Topology::default().rules() {
            assert_eq!(parse_pattern(&p.pattern.to_event_pattern()), Some(p.pattern));
        }
    }
}
