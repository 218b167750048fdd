//! The platform's own events about hooks, put on the bus for the verifier and for
//! customers' EventBridge rules.

use hookbridge_core::hook::Hook;
use hookbridge_core::message::PlatformDetail;

use crate::Api;

/// Publishes a lifecycle event. The change it reports is already stored, so a bus
/// failure must not undo or fail the request: it is logged, and `POST /verify`
/// re-triggers the verifier.
pub async fn emit(api: &Api, event_type: &str, hook: &Hook, reason: Option<String>) {
    emit_detail(api, event_type, PlatformDetail::about(hook, None, reason)).await;
}

/// Publishes a lifecycle event with this detail, as [`emit`] does.
pub async fn emit_detail(api: &Api, event_type: &str, detail: PlatformDetail) {
    let (hook_id, tenant) = (detail.hook_id, detail.tenant.clone());
    if let Err(e) = api.ports().bus.publish(vec![detail.bus_entry(event_type)]).await {
        tracing::error!(error = %e, event_type, %hook_id, %tenant, "could not publish a lifecycle event");
    }
}
