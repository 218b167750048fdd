//! The event bus: producers publish, rules route events to queues.

use async_trait::async_trait;
use serde_json::json;

use crate::Result;
use crate::envelope::BusEntry;
use crate::ids::EventId;

/// How a rule matches `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    /// Exactly this source.
    Exactly(String),
    /// Any source but this one.
    AnythingBut(String),
}

/// The subset of EventBridge event patterns the platform's rules use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePattern {
    /// The source condition.
    pub source: SourceMatch,
    /// The event types matched; empty matches any.
    pub detail_types: Vec<String>,
}

impl RulePattern {
    /// Whether an event matches, as EventBridge would decide.
    pub fn matches(&self, source: &str, detail_type: &str) -> bool {
        let source_ok = match &self.source {
            SourceMatch::Exactly(s) => s == source,
            SourceMatch::AnythingBut(s) => s != source,
        };
        source_ok && (self.detail_types.is_empty() || self.detail_types.iter().any(|d| d == detail_type))
    }

    /// The EventBridge event pattern JSON.
    pub fn to_event_pattern(&self) -> String {
        let source = match &self.source {
            SourceMatch::Exactly(s) => json!([s]),
            SourceMatch::AnythingBut(s) => json!([{ "anything-but": s }]),
        };
        let mut p = json!({ "source": source });
        if !self.detail_types.is_empty() {
            p["detail-type"] = json!(self.detail_types);
        }
        p.to_string()
    }
}

/// A rule: events matching `pattern` go to the queue named `target_queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// What it matches.
    pub pattern: RulePattern,
    /// The queue it sends to.
    pub target_queue: String,
}

/// What a publish that did not put every entry on the bus did put.
#[derive(Debug)]
pub struct PartlyPublished {
    /// The id of each entry that went out, in the order given; `None` for the others.
    pub ids: Vec<Option<EventId>>,
    /// Why the others did not: the first error met.
    pub error: crate::Error,
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes entries (any number; sent in batches of 10), returning the ids the bus
    /// assigned, in order. Each entry must be at most 256 KiB; a larger one fails the
    /// call with [`crate::Error::TooLarge`] before anything is sent.
    async fn publish(&self, entries: Vec<BusEntry>) -> Result<Vec<EventId>>;

    /// As [`Bus::publish`], and on failure which entries went out all the same (a bus
    /// that takes entries in several requests can take some and refuse the rest), so
    /// that a caller can tell its producer which events not to publish again. The
    /// default is for a bus that takes all or none.
    async fn publish_each(&self, entries: Vec<BusEntry>) -> std::result::Result<Vec<EventId>, PartlyPublished> {
        let count = entries.len();
        self.publish(entries).await.map_err(|error| PartlyPublished { ids: vec![None; count], error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_eventbridge() {
        let product = RulePattern { source: SourceMatch::AnythingBut("hookbridge".into()), detail_types: vec![] };
        assert!(product.matches("idp.login", "user.session.start"));
        assert!(!product.matches("hookbridge", "hook.created"));
        let lifecycle = RulePattern {
            source: SourceMatch::Exactly("hookbridge".into()),
            detail_types: vec!["hook.created".into()],
        };
        assert!(lifecycle.matches("hookbridge", "hook.created"));
        assert!(!lifecycle.matches("hookbridge", "hook.disabled"));
        assert_eq!(product.to_event_pattern(), r#"{"source":[{"anything-but":"hookbridge"}]}"#);
        assert_eq!(lifecycle.to_event_pattern(), r#"{"detail-type":["hook.created"],"source":["hookbridge"]}"#);
    }
}
