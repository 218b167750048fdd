//! Fields a newer release wrote that this one does not know, kept as they were
//! (decision 0044).
//!
//! Every writer of a hook, a task or a replay job rewrites the whole document from its own
//! types. Without a place for the fields it did not know, a release running beside a newer
//! one (the functions are updated one by one) or after a rollback wrote the document back
//! without them: one health write took a hook's `sites_since` away, and with it the limit
//! on how far back a portal session may read.

use serde::{Deserialize, Serialize};

/// The fields of a stored document that this release does not know, written back as they
/// were read. Empty for a document this release made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NewerFields(serde_json::Map<String, serde_json::Value>);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::hook::Hook;
    use crate::message::Task;

    /// A hook document with a field of a newer release at every level this release keeps
    /// them: read and written back, each is where it was, with its value.
    #[test]
    fn a_hooks_newer_fields_are_written_back_as_they_were() {
        let hook = crate::hook::test_hook(
            r#"{"name": "h", "url": "https://r.example/", "auth": {"type": "OAUTH_CLIENT_CREDENTIALS",
                "token_url": "https://idp.example/t", "client_id": "c", "client_secret": "s"}}"#,
            crate::hook::SealedSecrets(vec![1, 2, 3]),
        );
        let mut doc = serde_json::to_value(&hook).unwrap();
        let places = [
            "/x_top",
            "/config/x_config",
            "/config/verification/x_verification",
            "/config/auth/x_oauth",
            "/state/x_state",
            "/state/verification/x_verification_state",
            "/state/health/x_health",
            "/state/health/circuit/x_circuit",
        ];
        for (i, place) in places.iter().enumerate() {
            let (parent, name) = place.rsplit_once('/').unwrap();
            let at = if parent.is_empty() { &mut doc } else { doc.pointer_mut(parent).unwrap() };
            at.as_object_mut().unwrap().insert(name.to_owned(), json!({"n": i, "list": [i]}));
        }
        let read: Hook = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read.newer).unwrap(), json!({"x_top": {"n": 0, "list": [0]}}));
        let written = serde_json::to_value(&read).unwrap();
        for (i, place) in places.iter().enumerate() {
            assert_eq!(written.pointer(place), Some(&json!({"n": i, "list": [i]})), "{place}");
        }
        assert_eq!(written, doc);
        // A document this release made has none.
        assert_eq!(serde_json::to_value(&hook).unwrap().pointer("/x_top"), None::<&Value>);
    }

    /// A task with a field of a newer release keeps it, and its envelope as raw JSON, when
    /// this release sends it on (a retry, a deferral).
    #[test]
    fn a_tasks_newer_fields_go_on_with_it() {
        let body = r#"{"type":"delivery.v2","delivery":{"tenant":"acme","hook_id":"01J00000000000000000000000","delivery_id":"01J00000000000000000000000","event_id":"01J00000000000000000000000","event_type":"user.login"},"attempt":2,"envelope":{"a": [1, 2]},"x_later":{"site":"b"}}"#;
        let task = Task::parse(body, 1).expect("a task");
        assert_eq!(task.attempt, 2);
        assert_eq!(task.envelope.as_ref().map(|e| e.get()), Some(r#"{"a": [1, 2]}"#), "kept as raw JSON");
        let again: Value = serde_json::from_str(&Task { attempt: 3, ..task }.to_json()).unwrap();
        assert_eq!(again["x_later"], json!({"site": "b"}));
        assert_eq!(again["attempt"], 3);
    }
}
