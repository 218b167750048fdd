//! A hook's replays in the console: asking for one (from Read), following the hook's
//! recent jobs on its page, and cancelling one that runs.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use hookbridge_core::ids::ReplayId;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::call::{call, call_keyed};
use super::form;
use super::layout::{action, badge, time};
use super::pages::{Posted, refused, refused_then};
use super::see_other;
use super::session::Session;
use crate::Api;

/// Jobs the hook's page shows: the newest, which is what someone who just asked for one
/// is looking for. The API lists the rest.
const SHOWN: usize = 10;

/// The hook's newest replay jobs, as a section of its page; nothing when it has none.
pub(super) async fn section(api: &Api, s: &Session, id: &str) -> Markup {
    let a = call(api, &s.caller, Method::GET, &format!("/v1/hooks/{id}/replays?limit={SHOWN}"), None).await;
    if !a.ok() {
        // The hook itself was read a moment ago; its page is still worth showing.
        return html! { section.card { h2 { "Replays" } p.muted { "The hook's replays could not be read just now." } } };
    }
    let jobs = a.body["replays"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        return html! {};
    }
    let base = format!("/console/hooks/{id}");
    html! {
        section.card.replays {
            h2 { "Replays" }
            div.table-wrap { table {
                caption.visually-hidden { "Replays, newest first" }
                thead { tr { th scope="col" { "Asked for" } th scope="col" { "Window" } th scope="col" { "Deliveries" }
                    th scope="col" { "State" } th scope="col" { "Re-sent" } th scope="col" { "Not re-sent" } th scope="col" { "Finished" }
                    @if s.can_write() { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody { @for j in &jobs { tr.replay {
                    td data-label="Asked for" { (time(&j["created_at"])) }
                    td data-label="Window" { (time(&j["since"])) " – " (time(&j["until"])) }
                    td data-label="Deliveries" { (statuses(&j["status"])) }
                    td data-label="State" { (badge(j["state"].as_str().unwrap_or(""))) }
                    td data-label="Re-sent" { (j["queued"]) }
                    td data-label="Not re-sent" { (j["skipped"]) }
                    td data-label="Finished" { (time(&j["finished_at"])) }
                    @if s.can_write() { td data-label="Action" {
                        @if j["state"] == "RUNNING" {
                            (action(s, &format!("{base}/replays/{}/cancel", j["id"].as_str().unwrap_or("")), "Cancel replay", "danger"))
                        }
                    } }
                } } }
            } }
        }
    }
}

/// A job's status filter: `ALL` or the statuses it re-sends.
fn statuses(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        other => other.as_str().unwrap_or("ALL").to_owned(),
    }
}

/// What the replay form's key starts with; a fresh [`ReplayId`] follows.
pub(super) const ONCE_PREFIX: &str = "console-replay-";

/// A fresh key for a replay form.
pub(super) fn once_key() -> String {
    format!("{ONCE_PREFIX}{}", ReplayId::generate())
}

/// The form's own key: a second click, or the browser posting the form again, gets the
/// first job rather than a second one sending every delivery again. Only a key the form
/// makes counts: the keys are the tenant's, and a portal user choosing one could claim a
/// key the operator publishes with (their publishes `409` for a day) or learn it was used.
fn form_key(fields: &[(String, String)]) -> Option<&str> {
    form::value(fields, "once").filter(|k| k.strip_prefix(ONCE_PREFIX).is_some_and(|id| id.parse::<ReplayId>().is_ok()))
}

/// `POST /console/hooks/{id}/replay`.
pub async fn replay(State(api): State<Api>, Path(id): Path<String>, Posted(s, fields): Posted) -> Response {
    // As the script sends it (the instant the viewer's local time names, `…Z`), or as typed
    // into the form without it, in UTC.
    let as_utc = |v: &str| match v {
        "" => None,
        v if v.ends_with('Z') => Some(v.to_owned()),
        v => Some(format!("{}{}Z", v, if v.len() == 16 { ":00" } else { "" })),
    };
    let mut doc = json!({});
    if let Some(since) = form::value(&fields, "since").and_then(as_utc) {
        doc["since"] = json!(since);
    }
    if let Some(until) = form::value(&fields, "until").and_then(as_utc) {
        doc["until"] = json!(until);
    }
    // None ticked is sent as none, for the API to refuse: left out, it would mean `FAILED`.
    let statuses: Vec<&str> = fields.iter().filter(|(k, _)| k == "status").map(|(_, v)| v.as_str()).collect();
    doc["status"] = json!(statuses);
    let key = form_key(&fields);
    let a = call_keyed(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/replay"), Some(&doc), key).await;
    if !a.ok() {
        let base = format!("/console/hooks/{id}");
        let again = html! {
            @if s.can_write() { (replay_form(&s, &base, Some(&fields))) }
            p { a href=(format!("{base}/read")) { "Back to the hook's deliveries" } }
        };
        return refused_then(&s, "Replay", &a, again);
    }
    see_other(&format!("/console/hooks/{id}?done=replay"))
}

/// The form asking for a replay of the hook at `base`: empty, or as `typed` (a refused
/// one, shown again). A fresh key each time: the refused request's answer is kept under
/// its key, and the form sent again under it would be answered the same refusal.
///
/// A time the script sent is the UTC instant the viewer's local time named (`…Z`): the box
/// shows it in UTC, as the form says without the script, and carries the instant in
/// `data-instant` for the script to show in the viewer's zone again. Shown as UTC under
/// "(your time)", it was sent back nine hours early from Tokyo.
pub(super) fn replay_form(s: &Session, base: &str, typed: Option<&[(String, String)]>) -> Markup {
    let posted = |name: &str| typed.and_then(|t| form::value(t, name)).unwrap_or_default();
    // As a `datetime-local` input takes it: to the minute, without a zone.
    let value = |name: &str| {
        let v = posted(name);
        v.trim_end_matches('Z').get(..16).unwrap_or(v).to_owned()
    };
    let instant = |name: &str| Some(posted(name)).filter(|v| v.ends_with('Z'));
    let ticked = |status: &str| match typed {
        Some(t) => t.iter().any(|(k, v)| k == "status" && v == status),
        None => status != "SUCCEEDED",
    };
    html! {
        form.replay method="post" action=(format!("{base}/replay")) {
            input type="hidden" name="_csrf" value=(s.csrf());
            input type="hidden" name="once" value=(once_key());
            label { "Since (UTC) " input type="datetime-local" name="since" value=(value("since")) data-instant=[instant("since")] required; }
            label { "Until (UTC, optional) " input type="datetime-local" name="until" value=(value("until")) data-instant=[instant("until")]; }
            fieldset { legend { "Only deliveries that" }
                @for st in ["FAILED", "CANCELLED", "SUCCEEDED"] {
                    label.check { input type="checkbox" name="status" value=(st) checked[ticked(st)]; " " (st) }
                }
            }
            button type="submit" { "Replay" }
        }
    }
}

/// `POST /console/hooks/{id}/replays/{replay_id}/cancel`.
pub async fn cancel(
    State(api): State<Api>,
    Path((id, replay_id)): Path<(String, String)>,
    Posted(s, _): Posted,
) -> Response {
    let a = call(&api, &s.caller, Method::POST, &format!("/v1/hooks/{id}/replays/{replay_id}/cancel"), None).await;
    if !a.ok() {
        return refused(&s, "Cancel replay", &a);
    }
    // A job that finished before the cancel came is shown as it finished.
    let done = if a.body["state"] == "CANCELLED" { "replay-cancelled" } else { "replay-finished" };
    see_other(&format!("/console/hooks/{id}?done={done}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_key_the_form_made_is_sent() {
        let with = |once: &str| vec![("once".to_owned(), once.to_owned())];
        let made = once_key();
        assert_eq!(form_key(&with(&made)), Some(made.as_str()));
        for chosen in ["order-1234", "console-replay-", "console-replay-order-1234", ""] {
            assert_eq!(form_key(&with(chosen)), None, "{chosen}");
        }
        assert_eq!(form_key(&[]), None);
    }

    #[test]
    fn a_jobs_filter_reads_as_its_statuses_or_all() {
        assert_eq!(statuses(&json!("ALL")), "ALL");
        assert_eq!(statuses(&json!(["FAILED", "CANCELLED"])), "FAILED, CANCELLED");
        assert_eq!(statuses(&Value::Null), "ALL");
    }
}
