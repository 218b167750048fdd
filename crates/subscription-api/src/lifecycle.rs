//! The platform's own events about hooks, put on the bus for the verifier and for
//! customers' EventBridge rules.

use hookbridge_core::envelope::BusEntry;
use hookbridge_core::hook::Hook;
use hookbridge_core::message::{PLATFORM_SOURCE, PlatformDetail};
use serde_json::value::RawValue;

use crate::Api;

/// The bus entry for a lifecycle event about `hook`.
pub fn entry(event_type: &str, hook: &Hook, reason: Option<String>) -> BusEntry {
    let detail = PlatformDetail {
        tenant: hook.tenant.clone(),
        hook_id: hook.id,
        hook_version: Some(hook.version),
        delivery_id: None,
        reason,
    };
    BusEntry {
        detail_type: event_type.to_owned(),
        source: PLATFORM_SOURCE.to_owned(),
        time: None,
        resources: Vec::new(),
        // A struct of ids and strings always serialises to valid JSON.
        detail: serde_json::value::to_raw_value(&detail).unwrap_or_else(|_| empty_object()),
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("\"{{}}\" is JSON"))
}

/// Publishes a lifecycle event. The change it reports is already stored, so a bus
/// failure must not undo or fail the request: it is logged, and `POST /verify`
/// re-triggers the verifier.
pub async fn emit(api: &Api, event_type: &str, hook: &Hook, reason: Option<String>) {
    if let Err(e) = api.backend().bus.publish(vec![entry(event_type, hook, reason)]).await {
        tracing::error!(
            error = %e,
            event_type,
            hook_id = %hook.id,
            tenant = %hook.tenant,
            "could not publish a lifecycle event"
        );
    }
}
