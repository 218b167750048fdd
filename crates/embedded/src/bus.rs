//! The in-process bus: an event is accepted and routed to its rules' queues in one
//! transaction, so a published event is never lost between the bus and the queue.

use async_trait::async_trait;
use chrono::Utc;
use hookbridge_core::Result;
use hookbridge_core::envelope::BusEntry;
use hookbridge_core::ids::EventId;
use hookbridge_core::message::PLATFORM_SOURCE;
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
            .map(|e| e.into_envelope(EventId::generate_at(now), &self.account, &self.region, now))
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
        // Woken on the writer, once committed: a publisher gone away meanwhile (a cancelled
        // request) still wakes the receives its events are for.
        let wake = move |(targets, untaken): (Vec<String>, Untaken)| {
            for t in targets {
                queues.waker(&t).notify_waiters();
            }
            untaken
        };
        let untaken = self.db.write_then(move |c| route(c, &routed), wake).await?;
        for (detail_type, body) in untaken {
            told_to_the_log(&detail_type, &body);
        }
        Ok(ids)
    }
}

/// The platform's events no rule takes, by detail type and body, for the log.
type Untaken = Vec<(String, String)>;

/// Puts each event, `(source, detail type, body, tenant)`, on the queue of every rule that
/// matches it, in its tenant's group: the queues written to, and the platform's events no
/// rule took.
fn route(
    c: &mut rusqlite::Connection,
    routed: &[(String, String, String, Option<String>)],
) -> Result<(Vec<String>, Untaken)> {
    let rules: Vec<(RulePattern, String)> = {
        let mut stmt = c.prepare_cached("SELECT pattern, target FROM rules").map_err(sql("bus.rules"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("bus.rules"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql("bus.rules"))?;
        rows.into_iter().filter_map(|(p, t)| parse_pattern(&p).map(|p| (p, t))).collect()
    };
    let (mut touched, mut untaken) = (Vec::new(), Vec::new());
    for (source, detail_type, body, tenant) in routed {
        let mut taken = false;
        for (pattern, target) in &rules {
            if pattern.matches(source, detail_type) {
                let m = OutgoingMessage { group: tenant.clone(), ..OutgoingMessage::now(body.clone()) };
                queue::insert(c, target, &[m])?;
                touched.push(target.clone());
                taken = true;
            }
        }
        if !taken && source == PLATFORM_SOURCE {
            untaken.push((detail_type.clone(), body.clone()));
        }
    }
    Ok((touched, untaken))
}

/// A platform event (`hook.disabled`, `delivery.exhausted`, …) that no rule takes: on AWS
/// an operator's EventBridge rule may want it, and the embedded bus has no such rules, so
/// it is written to the log, where an operator of `hookbridge serve` can see and watch for it.
fn told_to_the_log(detail_type: &str, body: &str) {
    let detail = serde_json::from_str::<serde_json::Value>(body).ok().map(|e| e["detail"].to_string());
    tracing::info!(detail_type, detail = detail.as_deref().unwrap_or(body), "platform event");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's events no rule takes (`hook.deleted`, `hook.disabled`, …) are
    /// written to the log on the embedded bus, which has no operator's rules to take them;
    /// one a rule takes, and a producer's, are not.
    #[tokio::test]
    async fn a_platform_event_no_rule_takes_is_written_to_the_log() {
        let lines = crate::captured_logs::CapturedLogs::default();
        let _log = lines.on_this_thread();

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(&dir.path().join("hb.db")).unwrap_or_else(|e| panic!("{e}"));
        let bus = EmbeddedBus::new(db, "123456789012", "us-east-1");
        let taken = RulePattern {
            source: SourceMatch::Exactly(PLATFORM_SOURCE.into()),
            detail_types: vec!["hook.created".into()],
        };
        bus.put_rule(&Rule { name: "verify".into(), pattern: taken, target_queue: "verify".into() })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let entry = |source: &str, detail_type: &str| BusEntry {
            detail_type: detail_type.into(),
            source: source.into(),
            time: None,
            resources: Vec::new(),
            detail: serde_json::value::RawValue::from_string(format!(
                r#"{{"tenant":"acme","hook_id":"{detail_type}-hook"}}"#
            ))
            .unwrap_or_else(|e| panic!("{e}")),
        };
        let entries = vec![
            entry(PLATFORM_SOURCE, "hook.deleted"),
            entry(PLATFORM_SOURCE, "hook.created"),
            entry("idp", "user.login"),
        ];
        bus.publish(entries).await.unwrap_or_else(|e| panic!("{e}"));

        let written = lines.text();
        assert!(written.contains("platform event") && written.contains("hook.deleted-hook"), "{written}");
        assert!(!written.contains("hook.created-hook"), "taken by a rule: {written}");
        assert!(!written.contains("user.login-hook"), "a producer's: {written}");
    }

    /// A publish whose caller goes away once its write is on its way (a cancelled request)
    /// still wakes the receive waiting for its event, which gets it at once rather than
    /// at the end of its long poll.
    #[tokio::test]
    async fn an_event_published_by_a_caller_gone_meanwhile_still_wakes_its_receive() {
        use futures::FutureExt as _;
        use hookbridge_core::ports::Queue as _;
        use hookbridge_core::topology::QueueSpec;

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Db::open(&dir.path().join("hb.db")).unwrap_or_else(|e| panic!("{e}"));
        let spec = QueueSpec {
            name: "ingest".into(),
            dlq: "ingest-dlq".into(),
            visibility_timeout: std::time::Duration::from_secs(30),
            max_receive_count: 5,
        };
        crate::queue::create(&db, &spec).await.unwrap_or_else(|e| panic!("{e}"));
        let bus = EmbeddedBus::new(db.clone(), "123456789012", "us-east-1");
        let pattern = RulePattern { source: SourceMatch::Exactly("idp".into()), detail_types: Vec::new() };
        bus.put_rule(&Rule { name: "ingest".into(), pattern, target_queue: "ingest".into() })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let queue = crate::queue::EmbeddedQueue::new(db.clone(), "ingest");
        // Waits up to 20 s: far past the hang guard below.
        let waited = tokio::spawn(async move { queue.receive(10, std::time::Duration::from_secs(20)).await });
        let offered = async {
            while db.waiting("ingest").offers() < 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), offered).await.expect("the receive never waited");

        let entry = BusEntry {
            detail_type: "user.login".into(),
            source: "idp".into(),
            time: None,
            resources: Vec::new(),
            detail: serde_json::value::RawValue::from_string(r#"{"tenant":"acme"}"#.into())
                .unwrap_or_else(|e| panic!("{e}")),
        };
        // The writer busy for a moment, so the publish cannot be answered on its first poll
        // (a free writer could commit it in that poll, and the caller would not be gone).
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let (db, started) = (db.clone(), started.clone());
            tokio::spawn(async move {
                db.write(move |_| {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
                .await
            })
        };
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Polled once, which hands the write to the writer, and dropped.
        assert!(bus.publish(vec![entry]).now_or_never().is_none(), "answered before its commit");
        busy.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));

        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waited)
            .await
            .expect("the receive was not woken for the event")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.len(), 1);
        assert!(got[0].body.contains("user.login"), "{}", got[0].body);
    }

    #[test]
    fn stored_patterns_read_back() {
        for p in hookbridge_core::topology::Topology::default().rules() {
            assert_eq!(parse_pattern(&p.pattern.to_event_pattern()), Some(p.pattern));
        }
    }
}
