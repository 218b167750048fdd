//! Delivery metrics as CloudWatch Embedded Metric Format: one JSON log line per batch that
//! CloudWatch turns into metrics, with no SDK call and no extra request.

use serde_json::{Value, json};

/// The metrics namespace (the template's delivery-failures alarm watches it).
pub const NAMESPACE: &str = "Hookbridge";

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchMetrics {
    /// Attempts answered 2xx.
    pub succeeded: u64,
    /// Deliveries that failed for good (permanent failure or schedule exhausted).
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Deliveries not sent (hook deleted, disabled, unverified).
    pub cancelled: u64,
    /// Deliveries handed back to wait (an open circuit, a rate limit, an early retry).
    pub deferred: u64,
    /// Fast-lane requests given up after the patience and sent again on the slow lane.
    pub moved: u64,
    /// Each attempt's duration, in milliseconds.
    pub latencies_ms: Vec<u64>,
}

impl BatchMetrics {
    /// The EMF document, or `None` when the batch did nothing worth a line.
    /// `stack` (the resource prefix) is a dimension, so two stacks in one account keep
    /// apart metrics and alarms.
    pub fn to_emf(&self, stack: &str, function: &str, timestamp_ms: i64) -> Option<Value> {
        if self.succeeded + self.failed + self.retried + self.cancelled + self.deferred + self.moved == 0 {
            return None;
        }
        let mut doc = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Stack", "Function"]],
                    "Metrics": [
                        {"Name": "DeliveriesSucceeded", "Unit": "Count"},
                        {"Name": "DeliveriesFailed", "Unit": "Count"},
                        {"Name": "DeliveriesRetried", "Unit": "Count"},
                        {"Name": "DeliveriesCancelled", "Unit": "Count"},
                        {"Name": "DeliveriesDeferred", "Unit": "Count"},
                        {"Name": "DeliveriesMovedToSlowLane", "Unit": "Count"},
                        {"Name": "DeliveryLatency", "Unit": "Milliseconds"}
                    ]
                }]
            },
            "Stack": stack,
            "Function": function,
            "DeliveriesSucceeded": self.succeeded,
            "DeliveriesFailed": self.failed,
            "DeliveriesRetried": self.retried,
            "DeliveriesCancelled": self.cancelled,
            "DeliveriesDeferred": self.deferred,
            "DeliveriesMovedToSlowLane": self.moved,
            "DeliveryLatency": self.latencies_ms,
        });
        // A batch that made no attempt (its deliveries all waiting, cancelled, or failed
        // for good unsent) has no latency. The specification gives a metric a number or
        // an array of numbers, and says nothing of an empty array; a document CloudWatch
        // refused would lose the batch's `DeliveriesFailed` from the alarm on it. Left out
        // instead, as a metric with no value.
        if self.latencies_ms.is_empty() {
            if let Some(declared) = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array_mut() {
                declared.retain(|m| m["Name"] != "DeliveryLatency");
            }
            if let Some(fields) = doc.as_object_mut() {
                fields.remove("DeliveryLatency");
            }
        }
        Some(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics `doc` declares.
    fn declared(doc: &Value) -> Vec<&str> {
        let metrics = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap();
        metrics.iter().map(|m| m["Name"].as_str().unwrap()).collect()
    }

    #[test]
    fn emf_document_names_every_metric_it_carries() {
        let m = BatchMetrics { succeeded: 2, failed: 1, latencies_ms: vec![12, 30, 7], ..BatchMetrics::default() };
        let doc = m.to_emf("hb-prod", "delivery-worker", 1_700_000_000_000).unwrap();
        let declared = declared(&doc);
        for name in &declared {
            assert!(!doc[*name].is_null(), "{name} declared but not set");
        }
        assert_eq!(doc["DeliveriesFailed"], 1);
        assert_eq!(doc["DeliveryLatency"], json!([12, 30, 7]));
        assert_eq!((doc["Stack"].as_str(), doc["Function"].as_str()), (Some("hb-prod"), Some("delivery-worker")));
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Stack", "Function"]]));
        assert_eq!(BatchMetrics::default().to_emf("s", "f", 0), None);
    }

    /// A batch that made no attempt declares no latency, rather than an empty array.
    #[test]
    fn a_batch_with_no_attempt_carries_no_latency() {
        let m = BatchMetrics { failed: 2, cancelled: 1, ..BatchMetrics::default() };
        let doc = m.to_emf("hb-prod", "delivery-worker", 1_700_000_000_000).unwrap();
        let declared = declared(&doc);
        assert!(!declared.contains(&"DeliveryLatency"), "{declared:?}");
        assert!(doc.get("DeliveryLatency").is_none());
        for name in &declared {
            assert!(!doc[*name].is_null(), "{name} declared but not set");
        }
        assert_eq!(doc["DeliveriesFailed"], 2);
    }
}
