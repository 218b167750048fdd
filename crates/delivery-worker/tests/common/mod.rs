//! What the worker's tests on the embedded backend share: deliveries of a hook as the
//! queue would hand them over.

#![allow(dead_code)] // Each test binary uses its own part.

use std::time::Duration;

use chrono::Utc;
use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_core::delivery::DeliveryKey;
use hookbridge_core::hook::{Hook, Lane, NetworkPolicy};
use hookbridge_core::ids::{DeliveryId, EventId};
use hookbridge_core::message::Task;
use hookbridge_core::ports::{Receipt, ReceivedMessage};
use hookbridge_outbound::{Outbound, OutboundSettings};
use hookbridge_testkit::Harness;

/// A worker on `h`'s backend with the default settings, allowed to reach 127.0.0.1.
pub fn worker(h: &impl Harness) -> Worker {
    Worker::new(
        WorkerPorts::of(h.backend()),
        Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
            .expect("an HTTP client"),
        WorkerSettings::default(),
    )
}

/// `task` as received from the queue, as message `id`.
pub fn received(task: &Task, id: &str) -> ReceivedMessage {
    let now = Utc::now();
    ReceivedMessage {
        id: id.into(),
        body: task.message(now).body,
        receipt: Receipt(format!("r-{id}")),
        receive_count: 1,
        sent_at: now,
    }
}

/// A delivery of a new event to `hook`, its body carried in the message.
pub fn carried(key: &DeliveryKey, id: &str) -> ReceivedMessage {
    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"user.login","source":"idp","account":"1","time":"2026-12-02T00:00:00Z","region":"r","resources":[],"detail":{{}}}}"#,
        key.event_id
    );
    received(&Task::new(key.clone(), 0, &body), id)
}

/// A new delivery key of `hook`, the `n`th this millisecond.
pub fn key(hook: &Hook, n: u128) -> DeliveryKey {
    DeliveryKey {
        tenant: hook.tenant.clone(),
        hook_id: hook.id,
        delivery_id: DeliveryId::from_parts(Utc::now().timestamp_millis() as u64, n),
        event_id: EventId::generate(),
        event_type: "user.login".into(),
    }
}

/// A slow-lane batch with no deadline.
pub fn ctx() -> BatchContext<'static> {
    BatchContext { lane: Lane::Slow, deadline: None, settle: None }
}
