//! What the verifier's tests share: a verifier over a harness's backend, reaching real
//! receivers on this machine.

use std::time::Duration;

use chrono::Utc;
use hookbridge_core::hook::{Hook, NetworkPolicy};
use hookbridge_core::ids::EventId;
use hookbridge_core::ports::{Backend, Receipt, ReceivedMessage};
use hookbridge_outbound::{Outbound, OutboundSettings};
use verifier::{Verifier, VerifierPorts};

/// A verifier over `backend`, allowed to reach loopback.
#[allow(clippy::expect_used)] // Test support: fails loudly on purpose.
pub fn verifier_on(backend: &Backend) -> Verifier {
    Verifier {
        ports: VerifierPorts::of(backend),
        outbound: Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
            .expect("an outbound client"),
        account: "123456789012".into(),
        region: "us-east-1".into(),
    }
}

/// `hook.updated` for `hook`, as the verify queue hands it out for the `receive_count`th
/// time, as the message `id`.
#[allow(dead_code)] // each test binary uses part of it
pub fn hook_updated(hook: &Hook, id: &str, receive_count: u32) -> ReceivedMessage {
    lifecycle(hook, "hook.updated", id, receive_count)
}

/// The lifecycle event `kind` about `hook`, as the verify queue hands it out for the
/// `receive_count`th time, as the message `id`.
#[allow(dead_code)] // each test binary uses part of it
pub fn lifecycle(hook: &Hook, kind: &str, id: &str, receive_count: u32) -> ReceivedMessage {
    let body = format!(
        r#"{{"version":"0","id":"{}","detail-type":"{kind}","source":"hookbridge","account":"123456789012","time":"{}","region":"us-east-1","resources":[],"detail":{{"tenant":"{}","hook_id":"{}","hook_version":1}}}}"#,
        EventId::generate(),
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        hook.tenant,
        hook.id
    );
    ReceivedMessage { id: id.into(), body, receipt: Receipt(format!("r-{id}")), receive_count, sent_at: Utc::now() }
}
