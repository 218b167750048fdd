//! The platform's own events about hooks, put on the bus for the verifier and for
//! customers' EventBridge rules.

use hookbridge_core::hook::Hook;
use hookbridge_core::message::PlatformDetail;

use crate::Api;

/// Publishes a lifecycle event. The change it reports is already stored, so a bus
/// failure must not undo or fail the request: it is logged, and `POST /verify`
/// re-triggers the verifier.
pub async fn emit(api: &Api, event_type: &str, hook: &Hook, reason: Option<String>) {
    let entry = PlatformDetail::about(hook, None, reason).bus_entry(event_type);
    if let Err(e) = api.ports().bus.publish(vec![entry]).await {
        tracing::error!(
            error = %e,
            event_type,
            hook_id = %hook.id,
            tenant = %hook.tenant,
            "could not publish a lifecycle event"
        );
    }
}
