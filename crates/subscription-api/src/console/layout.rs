//! The console's page chrome and small pieces every page uses.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::session::Session;

/// A whole page.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Hookbridge" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/hooks" { "Hookbridge" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            a href="/console/hooks" { "Hooks" }
                            @if s.can_write() {
                                a href="/console/hooks/new" { "New hook" }
                            }
                        }
                        div.who {
                            span.tenant title="Tenant" { (s.caller.tenant.as_str()) }
                            @if !s.can_write() { span.badge.muted { "read-only" } }
                            @if !s.caller.sites.is_empty() { span.badge.muted title="Sites this session may see" { (s.caller.sites.join(", ")) } }
                            form.inline method="post" action="/console/logout" {
                                input type="hidden" name="_csrf" value=(s.csrf());
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A time as `<time>`: UTC in the text and on hover; the script shows it in the viewer's zone.
pub fn time(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) => {
            html! { time datetime=(t) title=(format!("{t} (UTC)")) { (t.replace('T', " ").trim_end_matches('Z')) " UTC" } }
        }
        None => html! { span.muted { "—" } },
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    let kind = match state {
        "ACTIVE" | "AUTHORIZED" | "SUCCEEDED" | "VERIFIED" | "closed" | "fast" => "good",
        "INACTIVE" | "DEAUTHORIZED" | "FAILED" | "open" | "CANCELLED" => "bad",
        "half_open" | "RETRYING" | "PENDING" | "AUTHORIZING" | "UPDATING" | "CREATING" | "RUNNING" | "slow" => "warn",
        _ => "muted",
    };
    html! { span class=(format!("badge {kind}")) { (state) } }
}

/// A notice at the top of a page.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { div class=(format!("notice {kind}")) role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

/// A form that posts one action, with the CSRF token.
pub fn action(session: &Session, to: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(to) {
            input type="hidden" name="_csrf" value=(session.csrf());
            button class=(class) type="submit" { (label) }
        }
    }
}

/// A string field of a JSON document, or `""`.
pub fn st<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}
