//! Phase one: turn messages into jobs. Loads each distinct hook once (one batch read),
//! opens its secrets once, and reads an envelope from the event store only when it was
//! too large to ride in the message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookbridge_core::delivery::DeliveryKey;
use hookbridge_core::hook::{Hook, HookSecrets, Undeliverable};
use hookbridge_core::ids::{EventId, HookId, TenantId};
use hookbridge_core::message::DeliveryTask;
use hookbridge_core::ports::ReceivedMessage;

use crate::Worker;

/// What to do with one message.
pub(crate) enum Job<'a> {
    /// Not a delivery task: fail it until the DLQ takes it.
    Poison(&'a ReceivedMessage),
    /// Record `CANCELLED` and acknowledge.
    Cancel { message: &'a ReceivedMessage, key: DeliveryKey, reason: String },
    /// Send it.
    Send(Box<Ready<'a>>),
}

/// A delivery ready to send.
pub(crate) struct Ready<'a> {
    pub(crate) message: &'a ReceivedMessage,
    pub(crate) key: DeliveryKey,
    pub(crate) hook: Arc<Hook>,
    pub(crate) secrets: Arc<HookSecrets>,
    pub(crate) body: Arc<str>,
}

/// A hook's opened secrets, or `Err` when they cannot be opened.
type Opened = Result<Arc<HookSecrets>, ()>;

/// A parsed delivery task: which delivery, and its envelope when it rode in the message.
type Task = (DeliveryKey, Option<String>);

pub(crate) async fn prepare<'a>(w: &Worker, messages: &'a [ReceivedMessage]) -> hookbridge_core::Result<Vec<Job<'a>>> {
    let tasks: Vec<(&ReceivedMessage, Option<Task>)> = messages
        .iter()
        .map(|m| {
            let task = serde_json::from_str::<DeliveryTask>(&m.body).ok().map(|t| match t {
                DeliveryTask::V1 { delivery, body } => (delivery, body),
            });
            (m, task)
        })
        .collect();

    let mut wanted: Vec<(TenantId, HookId)> =
        tasks.iter().filter_map(|(_, t)| t.as_ref().map(|(k, _)| (k.tenant.clone(), k.hook_id))).collect();
    wanted.sort();
    wanted.dedup();
    // Each hook's secrets are opened once per batch; `Err` when they cannot be (a blob this
    // key did not seal), which cancels that hook's deliveries and no others.
    let mut hooks: HashMap<HookId, (Arc<Hook>, Option<Opened>)> = HashMap::new();
    for h in w.backend.hooks.get_many(&wanted).await? {
        hooks.insert(h.id, (Arc::new(h), None));
    }

    let mut bodies: HashMap<EventId, Arc<str>> = HashMap::new();
    let mut jobs = Vec::with_capacity(tasks.len());
    for (message, task) in tasks {
        let Some((key, body)) = task else {
            tracing::error!(message_id = %message.id, "not a delivery task; it will reach the dead-letter queue");
            if let Err(e) = w.backend.delivery_queue.retry_after(&message.receipt, Duration::ZERO).await {
                tracing::warn!(message_id = %message.id, error = %e, "could not return a malformed message early");
            }
            jobs.push(Job::Poison(message));
            continue;
        };
        let Some((hook, secrets)) = hooks.get_mut(&key.hook_id).filter(|(h, _)| h.tenant == key.tenant) else {
            jobs.push(Job::Cancel { message, key, reason: Undeliverable::Deleted.to_string() });
            continue;
        };
        if let Err(why) = hook.deliverable() {
            jobs.push(Job::Cancel { message, key, reason: why.to_string() });
            continue;
        }
        if secrets.is_none() {
            *secrets = Some(match w.backend.sealer.open(&hook.sealed).await {
                Ok(s) => Ok(Arc::new(s)),
                Err(hookbridge_core::Error::Corrupt(why)) => {
                    tracing::error!(hook_id = %hook.id, tenant = %hook.tenant, why, "the hook's secrets cannot be opened");
                    Err(())
                }
                Err(e) => return Err(e),
            });
        }
        let secrets = match secrets {
            Some(Ok(s)) => s.clone(),
            _ => {
                jobs.push(Job::Cancel { message, key, reason: "the hook's secrets cannot be opened".to_owned() });
                continue;
            }
        };
        let body: Arc<str> = match body {
            Some(b) => b.into(),
            None => match bodies.get(&key.event_id) {
                Some(b) => b.clone(),
                None => match w.backend.events.get(&key.tenant, &key.event_id).await? {
                    Some(env) => {
                        let b: Arc<str> = env.to_body().into();
                        bodies.insert(key.event_id.clone(), b.clone());
                        b
                    }
                    None => {
                        jobs.push(Job::Cancel { message, key, reason: "event no longer kept".to_owned() });
                        continue;
                    }
                },
            },
        };
        jobs.push(Job::Send(Box::new(Ready { message, key, hook: hook.clone(), secrets, body })));
    }
    Ok(jobs)
}
