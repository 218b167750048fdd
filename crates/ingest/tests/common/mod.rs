//! What the ingest tests share: ingest over a harness's backend, and the tasks it queued.

use std::time::Duration;

use hookbridge_core::message::Task;
use hookbridge_core::ports::Queue;
use hookbridge_testkit::Harness;
use ingest::{Ingest, IngestPorts, IngestSettings};

/// Ingest over `h`'s backend, keeping envelopes an hour.
pub fn deps(h: &dyn Harness) -> Ingest {
    Ingest {
        ports: IngestPorts::of(h.backend()),
        settings: IngestSettings {
            account: "1".into(),
            region: "r".into(),
            event_retention: Duration::from_secs(3600),
            routing_most_bytes: hookbridge_core::settings::Quotas::default().routing_most_bytes(),
        },
    }
}

/// Up to `n` tasks from the fast delivery lane, waiting up to ten seconds for them.
pub async fn queued_tasks(h: &dyn Harness, n: usize) -> Vec<Task> {
    tasks_on(h.backend().delivery_queue.as_ref(), n).await
}

/// Up to `n` tasks from `lane`, waiting up to ten seconds for them.
pub async fn tasks_on(lane: &dyn Queue, n: usize) -> Vec<Task> {
    let mut got = Vec::new();
    for _ in 0..20 {
        for m in lane.receive(10, Duration::from_millis(500)).await.expect("receive") {
            got.push(Task::parse(&m.body, m.receive_count).expect("a delivery task"));
        }
        if got.len() >= n {
            break;
        }
    }
    got
}
