//! New and Edit: every field of a hook, named by its API path so the API's field errors
//! show beside the input they name. Secret values are never shown; left blank on Edit,
//! they keep their stored value.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::{Value, json};

use super::call::{Answer, call};
use super::layout::{notice, page, st};
use super::pages::{Posted, read_only, refused, secret_page};
use super::session::Session;
use super::{form, html, see_other};
use crate::Api;

const AUTH_TYPES: [(&str, &str); 5] = [
    ("NONE", "None"),
    ("BASIC", "Basic (username and password)"),
    ("API_KEY", "API key (sent as a bearer token)"),
    ("HEADER", "Custom header"),
    ("OAUTH_CLIENT_CREDENTIALS", "OAuth client credentials"),
];
const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];
const PAYLOADS: [(&str, &str); 3] = [
    ("envelope", "The whole envelope (EventBridge's shape)"),
    ("detail", "The event's detail alone"),
    ("detail_array", "The detail in a one-element array"),
];
const PARAM_LISTS: [(&str, &str); 3] = [
    ("header_params", "Header parameters"),
    ("query_params", "Query-string parameters"),
    ("body_params", "Body parameters"),
];

/// The auth fields each type takes.
fn auth_fields(ty: &str) -> &'static [&'static str] {
    match ty {
        "BASIC" => &["username", "password"],
        "API_KEY" => &["key_name", "key_value"],
        "HEADER" => &["name", "value"],
        "OAUTH_CLIENT_CREDENTIALS" => {
            &["token_url", "client_id", "client_secret", "http_method", "header_params", "query_params", "body_params"]
        }
        _ => &[],
    }
}

fn lines(v: &str) -> Vec<String> {
    v.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// The API document of a submitted form.
fn document(fields: &[(String, String)]) -> Value {
    let get = |k: &str| form::value(fields, k).unwrap_or("");
    let mut doc = json!({});
    for key in ["name", "url", "method", "payload"] {
        if !get(key).is_empty() {
            doc[key] = json!(get(key));
        }
    }
    // A browser posts a textarea's line breaks as CRLF; the API's (and a producer's) are LF.
    doc["description"] = json!(get("description").replace("\r\n", "\n"));
    doc["enabled"] = json!(form::value(fields, "enabled").is_some());
    // None listed: every event (the API's default).
    let types = lines(get("event_types"));
    doc["event_types"] = if types.is_empty() { json!(["*"]) } else { json!(types) };
    doc["sites"] = json!(if get("scope") == "sites" { lines(get("sites")) } else { Vec::new() });
    let ty = if get("auth.type").is_empty() { "NONE" } else { get("auth.type") };
    doc["auth"] = json!({"type": ty});
    let allowed = auth_fields(ty);
    // A row's value is sent even when empty (the API takes `""`), unless the row is secret,
    // where empty means "keep the stored one".
    let sent = |k: &str, v: &str| {
        !v.is_empty()
            || (k.contains('[')
                && k.ends_with(".value")
                && k.rsplit_once('.').is_some_and(|(row, _)| form::value(fields, &format!("{row}.secret")).is_none()))
    };
    for (k, v) in fields {
        if let Some(rest) = k.strip_prefix("auth.") {
            let top = rest.split(['.', '[']).next().unwrap_or("");
            if allowed.contains(&top) && sent(k, v) {
                let value = if rest.ends_with(".secret") { json!(true) } else { json!(v) };
                form::set(&mut doc, k, value);
            }
        } else if k.starts_with("headers[") && sent(k, v) {
            let value = if k.ends_with(".secret") { json!(true) } else { json!(v) };
            form::set(&mut doc, k, value);
        }
    }
    doc["verification"] = json!({"required": form::value(fields, "verification.required").is_some()});
    if !get("verification.header").is_empty() {
        doc["verification"]["header"] = json!(get("verification.header").to_ascii_lowercase());
    }
    doc["retry_non_2xx"] = json!(form::value(fields, "retry_non_2xx").is_some());
    let keycloak = fields.iter().any(|(k, v)| k == "signature_formats" && v == "keycloak");
    doc["signature_formats"] = json!(if keycloak { vec!["keycloak"] } else { Vec::new() });
    doc["rate_limit"] = match get("rate_limit.per_second").trim().parse::<u64>() {
        Ok(n) => json!({"per_second": n}),
        Err(_) if get("rate_limit.per_second").trim().is_empty() => Value::Null,
        // Not a number: let the API say so, naming the field.
        Err(_) => json!({"per_second": get("rate_limit.per_second")}),
    };
    if let Ok(version) = get("version").parse::<u64>() {
        doc["version"] = json!(version);
    }
    form::compact(&mut doc);
    // compact drops an empty sites or event-types list as a blank row would; they mean "all".
    if doc.get("sites").is_none() {
        doc["sites"] = json!([]);
    }
    doc
}

/// The errors of one field.
fn errors_at<'a>(errors: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    errors.iter().filter(|(f, _)| f == name).map(|(_, m)| m.as_str()).collect()
}

fn error_id(name: &str) -> String {
    format!("err-{}", name.replace(['.', '[', ']'], "-"))
}

/// A labelled input.
fn field(label: &str, name: &str, hint: Option<&str>, errors: &[(String, String)], input: Markup) -> Markup {
    let errs = errors_at(errors, name);
    html! {
        div class=(if errs.is_empty() { "field" } else { "field invalid" }) {
            label for=(name) { (label) }
            (input)
            @if let Some(h) = hint { p.hint { (h) } }
            @for e in &errs { p.error id=(error_id(name)) { (e) } }
        }
    }
}

fn text(name: &str, value: &str, errors: &[(String, String)], attrs: &str) -> Markup {
    let invalid = !errors_at(errors, name).is_empty();
    let (kind, placeholder) = match attrs {
        "secret" => ("password", "••••"),
        "secret-kept" => ("password", "leave blank to keep"),
        "url" => ("url", "https://"),
        _ => ("text", ""),
    };
    html! {
        input id=(name) name=(name) type=(kind) value=(value) placeholder=(placeholder) autocomplete="off"
            aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then(|| error_id(name))];
    }
}

fn rows_of(doc: &Value, path: &[&str]) -> Vec<Value> {
    let mut at = doc;
    for p in path {
        at = &at[*p];
    }
    at.as_array().cloned().unwrap_or_default()
}

fn kv_rows(prefix: &str, rows: &[Value], spare: usize, errors: &[(String, String)], key: &str, edit: bool) -> Markup {
    let n = rows.len() + spare;
    html! {
        div.rows data-rows=(prefix) {
            @for i in 0..n {
                @let row = rows.get(i).cloned().unwrap_or(Value::Null);
                @let secret = row["secret"] == true;
                div.row {
                    (field(if key == "name" { "Name" } else { "Key" }, &format!("{prefix}[{i}].{key}"), None, errors,
                        text(&format!("{prefix}[{i}].{key}"), st(&row, key), errors, "")))
                    (field("Value", &format!("{prefix}[{i}].value"), None, errors,
                        // A secret value is never written into a page, even one typed into a refused form.
                        text(&format!("{prefix}[{i}].value"), if secret { "" } else { st(&row, "value") }, errors, if secret && edit { "secret-kept" } else { "" })))
                    label.check { input type="checkbox" name=(format!("{prefix}[{i}].secret")) value="true" checked[secret]; " Secret" }
                }
            }
            button.add type="button" data-add-row=(prefix) { "Add a row" }
        }
    }
}

/// The form, filled from `doc` (the hook as read, or as just submitted).
fn hook_form(s: &Session, action: &str, doc: &Value, errors: &[(String, String)], edit: bool) -> Markup {
    let auth = &doc["auth"];
    let ty = auth["type"].as_str().unwrap_or("NONE");
    let sites: Vec<&str> = doc["sites"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let types: Vec<&str> = doc["event_types"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let unplaced: Vec<&(String, String)> = errors.iter().filter(|(f, _)| !has_input(f)).collect();
    let secret_hint = if edit { "secret-kept" } else { "secret" };
    html! {
        @if errors.iter().any(|(f, _)| !f.is_empty()) { (notice("error", "Some fields need attention; each says why below.")) }
        @for (f, m) in &unplaced { (notice("error", &if f.is_empty() { m.clone() } else { format!("{f}: {m}") })) }
        form.hook method="post" action=(action) novalidate {
            input type="hidden" name="_csrf" value=(s.csrf());
            // The version the form was filled from: a save over someone else's change
            // since is refused, as the API refuses it, rather than undoing theirs.
            @if edit { @if let Some(v) = doc["version"].as_u64() { input type="hidden" name="version" value=(v); } }
            fieldset { legend { "Hook" }
                (field("Name", "name", Some(if edit { "A hook's name cannot change." } else { "Letters, digits, '.', '_' and '-'; unique among your hooks." }), errors, html! {
                    input #name name="name" type="text" value=(st(doc, "name")) readonly[edit] required autocomplete="off";
                }))
                // A textarea: a one-line input drops a description's line breaks, and any save
                // of the hook would then rewrite it.
                (field("Description", "description", None, errors, html! {
                    // HTML drops a line break just after `<textarea>`: this one, not the description's.
                    textarea #description name="description" rows="2" { "\n" (st(doc, "description")) }
                }))
                (field("Endpoint URL", "url", Some("Where events are sent (https)."), errors, text("url", st(doc, "url"), errors, "url")))
                (field("HTTP method", "method", None, errors, html! {
                    select #method name="method" { @for m in METHODS { option value=(m) selected[st(doc, "method") == m || (m == "POST" && st(doc, "method").is_empty())] { (m) } } }
                }))
                div.field { label.check { input type="checkbox" name="enabled" value="true" checked[doc["enabled"] != false]; " Enabled: deliver events to it" } }
                (field("Payload", "payload", None, errors, html! {
                    select #payload name="payload" { @for (v, l) in PAYLOADS { option value=(v) selected[st(doc, "payload") == v] { (l) } } }
                }))
            }
            fieldset { legend { "Applies to" }
                label.check { input type="radio" name="scope" value="workspace" checked[sites.is_empty()]; " The entire workspace" }
                label.check { input type="radio" name="scope" value="sites" checked[!sites.is_empty()]; " Specific sites" }
                (field("Sites (one per line)", "sites", None, errors, html! {
                    textarea #sites name="sites" rows="3" { (sites.join("\n")) }
                }))
            }
            fieldset { legend { "Event subscriptions" }
                (field("Event types (one pattern per line)", "event_types", Some("'*' matches any run of characters: user.* or admin.CLIENT-*. Empty means every event."), errors, html! {
                    textarea #event_types name="event_types" rows="4" data-preview="preview" { (types.join("\n")) }
                }))
                div #preview.preview aria-live="polite" { span.muted { "The known event types your patterns match show here." } }
            }
            fieldset { legend { "Authentication" }
                (field("Type", "auth.type", None, errors, html! {
                    select id="auth.type" name="auth.type" data-auth-select="" {
                        @for (v, l) in AUTH_TYPES { option value=(v) selected[ty == v] { (l) } }
                    }
                }))
                div data-auth="BASIC" {
                    (field("Username", "auth.username", None, errors, text("auth.username", st(auth, "username"), errors, "")))
                    (field("Password", "auth.password", None, errors, text("auth.password", "", errors, secret_hint)))
                }
                div data-auth="API_KEY" {
                    (field("Key name", "auth.key_name", Some("A label for you; never sent."), errors, text("auth.key_name", st(auth, "key_name"), errors, "")))
                    (field("Key value", "auth.key_value", None, errors, text("auth.key_value", "", errors, secret_hint)))
                }
                div data-auth="HEADER" {
                    (field("Header name", "auth.name", Some("The authorization header's name, e.g. X-Api-Key."), errors, text("auth.name", st(auth, "name"), errors, "")))
                    (field("Header value", "auth.value", None, errors, text("auth.value", "", errors, secret_hint)))
                }
                div data-auth="OAUTH_CLIENT_CREDENTIALS" {
                    (field("Authorization endpoint", "auth.token_url", None, errors, text("auth.token_url", st(auth, "token_url"), errors, "url")))
                    (field("Client ID", "auth.client_id", None, errors, text("auth.client_id", st(auth, "client_id"), errors, "")))
                    (field("Client secret", "auth.client_secret", None, errors, text("auth.client_secret", "", errors, secret_hint)))
                    (field("Token request method", "auth.http_method", None, errors, html! {
                        select id="auth.http_method" name="auth.http_method" { @for m in ["POST", "GET"] { option value=(m) selected[st(auth, "http_method") == m] { (m) } } }
                    }))
                    @for (list, label) in PARAM_LISTS {
                        h3 { (label) }
                        (kv_rows(&format!("auth.{list}"), &rows_of(doc, &["auth", list]), 1, errors, "key", edit))
                    }
                }
            }
            fieldset { legend { "Extra headers" }
                (kv_rows("headers", &rows_of(doc, &["headers"]), 1, errors, "name", edit))
            }
            fieldset { legend { "Ownership and signatures" }
                div.field { label.check { input type="checkbox" name="verification.required" value="true" checked[doc["verification"]["required"] == true]; " Deliver only after the endpoint answers the ownership challenge" } }
                (field("Challenge header", "verification.header", None, errors, text("verification.header", doc["verification"]["header"].as_str().unwrap_or("x-uid-challenge"), errors, "")))
                div.field { label.check { input type="checkbox" name="signature_formats" value="keycloak" checked[doc["signature_formats"].as_array().is_some_and(|f| f.iter().any(|x| x == "keycloak"))]; " Also sign with X-Keycloak-Signature" } }
                div.field { label.check { input type="checkbox" name="retry_non_2xx" value="true" checked[doc["retry_non_2xx"] == true]; " Retry every answer that is not 2xx, as Keycloak does (by default a 3xx or 4xx fails at once)" } }
                (field("Rate limit (deliveries a second)", "rate_limit.per_second", Some("Empty for none."), errors,
                    // As typed, when the API refused it (`abc`, `1.5`): the reader sees what to fix.
                    text("rate_limit.per_second", &doc["rate_limit"]["per_second"].as_u64().map(|n| n.to_string())
                        .or_else(|| doc["rate_limit"]["per_second"].as_str().map(str::to_owned)).unwrap_or_default(), errors, "")))
            }
            div.buttons {
                button.primary type="submit" { @if edit { "Save" } @else { "Create hook" } }
                " "
                a.button href=(if edit { action.trim_end_matches("/edit").to_owned() } else { "/console/hooks".to_owned() }) { "Cancel" }
            }
        }
    }
}

/// Fields the form has inputs for (others' errors show at the top: `version`, when the hook
/// changed since the form was filled, among them).
const FIELDS: [&str; 13] = [
    "name",
    "description",
    "url",
    "method",
    "payload",
    "sites",
    "event_types",
    "verification.header",
    "rate_limit.per_second",
    "enabled",
    "verification.required",
    "signature_formats",
    "retry_non_2xx",
];

/// Whether `field` is one input of a row of `list`: its `key` (or name), or its value.
fn is_row_input(field: &str, list: &str, key: &str) -> bool {
    field
        .strip_prefix(list)
        .and_then(|r| r.strip_prefix('['))
        .and_then(|r| r.split_once("]."))
        .is_some_and(|(i, f)| i.parse::<usize>().is_ok() && (f == key || f == "value"))
}

/// Whether the form shows `field`'s errors beside an input of its own; the rest show at
/// the top (a row's Secret box, a list as a whole), or nothing would say what to fix.
fn has_input(field: &str) -> bool {
    if FIELDS.contains(&field) || field == "auth.type" || is_row_input(field, "headers", "name") {
        return true;
    }
    let Some(rest) = field.strip_prefix("auth.") else { return false };
    let lists = PARAM_LISTS.map(|(list, _)| list);
    if lists.iter().any(|list| is_row_input(rest, list, "key")) {
        return true;
    }
    // A parameter list as a whole has no input; every other field of a type does.
    !lists.contains(&rest) && AUTH_TYPES.iter().any(|(ty, _)| auth_fields(ty).contains(&rest))
}

/// `GET /console/hooks/new`.
pub async fn new_form(s: Session) -> Response {
    if let Some(refused) = read_only(&s, "New hook") {
        return refused;
    }
    // A session held to sites may only make hooks within them: the form starts there, not
    // at "the entire workspace", which it would refuse.
    let sites = &s.caller.sites;
    let doc =
        json!({"enabled": true, "method": "POST", "payload": "envelope", "auth": {"type": "NONE"}, "sites": sites});
    html(
        StatusCode::OK,
        page("New hook", Some(&s), html! { h1 { "New hook" } (hook_form(&s, "/console/hooks/new", &doc, &[], false)) }),
    )
}

/// `POST /console/hooks/new`.
pub async fn create(State(api): State<Api>, Posted(s, fields): Posted) -> Response {
    let doc = document(&fields);
    let a = call(&api, &s.caller, Method::POST, "/v1/hooks", Some(&doc)).await;
    if let Some(mut errors) = not_saved(&a) {
        if errors.is_empty() {
            errors.push(("name".to_owned(), a.detail()));
        }
        retype_secrets(&doc, &mut errors);
        return html(
            a.status,
            page(
                "New hook",
                Some(&s),
                html! { h1 { "New hook" } (hook_form(&s, "/console/hooks/new", &doc, &errors, false)) },
            ),
        );
    }
    if !a.ok() {
        return refused(&s, "New hook", &a);
    }
    secret_page(
        &s,
        st(&a.body, "id"),
        "Hook created",
        st(&a.body, "secret"),
        "Deliveries to it are signed with this secret (Standard Webhooks).",
    )
}

/// `GET /console/hooks/{id}/edit`.
pub async fn edit_form(State(api): State<Api>, s: Session, Path(id): Path<String>) -> Response {
    if let Some(refused) = read_only(&s, "Edit hook") {
        return refused;
    }
    let a = call(&api, &s.caller, Method::GET, &format!("/v1/hooks/{id}"), None).await;
    if !a.ok() {
        return refused(&s, "Edit hook", &a);
    }
    let action = format!("/console/hooks/{id}/edit");
    html(
        StatusCode::OK,
        page(
            "Edit hook",
            Some(&s),
            html! { h1 { "Edit " (st(&a.body, "name")) } (hook_form(&s, &action, &a.body, &[], true)) },
        ),
    )
}

/// The errors to show beside a form the API did not save, which comes back as typed:
/// what was wrong with it (`400`, `409`, `422`), or — when the service could not take it
/// now (`429`, a `5xx`) — why, above the form. `None` for a refusal the form cannot mend
/// (no such hook, not allowed), shown as a page of its own. A form thrown away on a
/// moment's outage lost everything typed into it, secrets included.
fn not_saved(a: &Answer) -> Option<Vec<(String, String)>> {
    match a.status {
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => Some(a.field_errors()),
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => Some(vec![(
            String::new(),
            format!("Not saved: {} Try again in a moment; what you typed is kept below.", a.detail()),
        )]),
        _ => None,
    }
}

/// The authentication secrets typed into a form that was not saved: the form comes back
/// with those boxes empty (a secret is never written into a page), so each says it must be
/// typed again. Left empty, an edit would keep the old secret and say "Saved."
fn retype_secrets(doc: &Value, errors: &mut Vec<(String, String)>) {
    let typed = |v: &Value| v.as_str().is_some_and(|v| !v.is_empty());
    let mut fields: Vec<String> = ["password", "key_value", "value", "client_secret"]
        .iter()
        .filter(|key| typed(&doc["auth"][**key]))
        .map(|key| format!("auth.{key}"))
        .collect();
    // Secret header and OAuth parameter rows, whose values come back empty too.
    for (prefix, path) in PARAM_LISTS
        .iter()
        .map(|(list, _)| (format!("auth.{list}"), vec!["auth", *list]))
        .chain([("headers".to_owned(), vec!["headers"])])
    {
        for (i, row) in rows_of(doc, &path).iter().enumerate() {
            if row["secret"] == true && typed(&row["value"]) {
                fields.push(format!("{prefix}[{i}].value"));
            }
        }
    }
    for field in fields {
        if !errors.iter().any(|(f, _)| *f == field) {
            errors.push((field, "not saved: type it again (a secret is never shown back)".to_owned()));
        }
    }
}

/// `POST /console/hooks/{id}/edit`.
pub async fn replace(State(api): State<Api>, Path(id): Path<String>, Posted(s, fields): Posted) -> Response {
    let doc = document(&fields);
    let a = call(&api, &s.caller, Method::PUT, &format!("/v1/hooks/{id}"), Some(&doc)).await;
    if let Some(mut errors) = not_saved(&a) {
        if errors.is_empty() {
            errors.push(("version".to_owned(), a.detail()));
        }
        retype_secrets(&doc, &mut errors);
        let action = format!("/console/hooks/{id}/edit");
        return html(
            a.status,
            page(
                "Edit hook",
                Some(&s),
                html! { h1 { "Edit " (st(&doc, "name")) } (hook_form(&s, &action, &doc, &errors, true)) },
            ),
        );
    }
    if !a.ok() {
        return refused(&s, "Edit hook", &a);
    }
    see_other(&format!("/console/hooks/{id}?done=saved"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// A secret header or OAuth parameter row is removed by emptying it, Secret box still
    /// ticked (there is no remove button); it was posted as `{"secret": true}` and refused.
    /// A secret row that keeps its name keeps its stored value.
    #[test]
    fn an_emptied_secret_row_is_removed() {
        let doc = document(&f(&[
            ("name", "h"),
            ("auth.type", "OAUTH_CLIENT_CREDENTIALS"),
            ("auth.body_params[0].key", ""),
            ("auth.body_params[0].value", ""),
            ("auth.body_params[0].secret", "true"),
            ("headers[0].name", ""),
            ("headers[0].value", ""),
            ("headers[0].secret", "true"),
            ("headers[1].name", "X-Kept"),
            ("headers[1].value", ""),
            ("headers[1].secret", "true"),
        ]));
        assert_eq!(doc["headers"], json!([{"name": "X-Kept", "secret": true}]));
        assert!(doc["auth"].get("body_params").is_none_or(|p| *p == json!([])), "{doc}");
    }

    /// A form that was not saved says which secrets must be typed again: they come back
    /// empty, and an edit saved with them empty keeps the old ones ("Saved.").
    #[test]
    fn secrets_typed_into_a_refused_form_are_asked_for_again() {
        let doc = document(&f(&[
            ("name", "h"),
            ("auth.type", "BASIC"),
            ("auth.username", "u"),
            ("auth.password", "pw-2"),
            ("headers[0].name", "X-Plain"),
            ("headers[0].value", "shown"),
            ("headers[1].name", "X-Key"),
            ("headers[1].value", "hv-9"),
            ("headers[1].secret", "true"),
        ]));
        let mut errors = vec![("url".to_owned(), "is required".to_owned())];
        retype_secrets(&doc, &mut errors);
        assert_eq!(
            errors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            ["url", "auth.password", "headers[1].value"]
        );
        let page = hook_form(&session(), "/console/hooks/new", &doc, &errors, true).into_string();
        assert!(page.contains("type it again"), "the page says so");
        assert!(!page.contains("pw-2") && !page.contains("hv-9"), "no secret is written into the page");
        assert!(page.contains("shown"), "a plain header's value is");
    }

    fn session() -> Session {
        let caller = crate::auth::Caller {
            tenant: "acme".parse().unwrap(),
            sub: "s".into(),
            scopes: Vec::new(),
            realm_roles: Vec::new(),
            sites: Vec::new(),
        };
        Session { caller, cookie: "t.x".into(), forms: "t.x".into() }
    }

    /// A header or parameter the API took with an empty value is sent back so: dropped, the
    /// row was refused for want of a value, and no edit of the hook could be saved.
    #[test]
    fn an_empty_value_the_api_takes_is_sent_as_empty() {
        let doc = document(&f(&[
            ("name", "h"),
            ("auth.type", "OAUTH_CLIENT_CREDENTIALS"),
            ("auth.query_params[0].key", "audience"),
            ("auth.query_params[0].value", ""),
            ("headers[0].name", "X-Flag"),
            ("headers[0].value", ""),
            ("headers[1].name", ""),
            ("headers[1].value", ""),
        ]));
        assert_eq!(doc["headers"], json!([{"name": "X-Flag", "value": ""}]));
        assert_eq!(doc["auth"]["query_params"], json!([{"key": "audience", "value": ""}]));
    }

    /// An error with no input of its own (a row's Secret box, a list as a whole) shows at
    /// the top; before, the page said "each says why below" and nothing below did.
    #[test]
    fn an_error_without_an_input_of_its_own_shows_at_the_top() {
        let doc = json!({"name": "h", "auth": {"type": "OAUTH_CLIENT_CREDENTIALS"}});
        let errors = vec![
            ("auth.header_params[0].secret".to_owned(), "must be false".to_owned()),
            ("auth.body_params".to_owned(), "at most 20".to_owned()),
            ("headers[0].value".to_owned(), "is required".to_owned()),
        ];
        let page = hook_form(&session(), "/console/hooks/new", &doc, &errors, false).into_string();
        assert!(page.contains("auth.header_params[0].secret: must be false"), "{page}");
        assert!(page.contains("auth.body_params: at most 20"), "{page}");
        assert!(!page.contains("headers[0].value: is required"), "shown beside its input instead");
        assert!(page.contains("is required"));
    }

    /// A form the service could not take now (`503`, `429`) comes back as typed with why
    /// above it, its secrets asked for again; it was a page with only a link away, and
    /// everything typed was lost. One it cannot mend (`404`, `403`) is still a page of its
    /// own.
    #[test]
    fn a_form_the_service_could_not_take_now_comes_back_as_typed() {
        let answer = |status: StatusCode| Answer {
            status,
            body: json!({"status": status.as_u16(), "detail": "the key service is out of reach; retry later"}),
        };
        for status in
            [StatusCode::SERVICE_UNAVAILABLE, StatusCode::TOO_MANY_REQUESTS, StatusCode::INTERNAL_SERVER_ERROR]
        {
            let doc = document(&f(&[
                ("name", "h"),
                ("url", "https://typed.example/in"),
                ("auth.type", "BASIC"),
                ("auth.password", "pw-7"),
            ]));
            let mut errors = not_saved(&answer(status)).expect("the form again");
            retype_secrets(&doc, &mut errors);
            let page = hook_form(&session(), "/console/hooks/new", &doc, &errors, false).into_string();
            assert!(page.contains("Not saved: the key service is out of reach"), "{page}");
            assert!(page.contains("https://typed.example/in"), "what was typed is kept");
            assert!(page.contains("type it again") && !page.contains("pw-7"), "the secret is asked for again");
        }
        for status in [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN] {
            assert!(not_saved(&answer(status)).is_none(), "{status}");
        }
    }

    /// A description with line breaks is kept as it is when the hook is edited and saved.
    #[test]
    fn a_description_keeps_its_line_breaks() {
        let doc = json!({"name": "h", "description": "first line\nsecond line", "auth": {"type": "NONE"}});
        let page = hook_form(&session(), "/console/hooks/h/edit", &doc, &[], true).into_string();
        assert!(page.contains(">\nfirst line\nsecond line</textarea>"), "{page}");
        let leading = json!({"name": "h", "description": "\nindented", "auth": {"type": "NONE"}});
        let page = hook_form(&session(), "/console/hooks/h/edit", &leading, &[], true).into_string();
        assert!(page.contains(">\n\nindented</textarea>"), "a leading line break survives the parser: {page}");
        let posted = document(&f(&[("name", "h"), ("description", "first line\r\nsecond line")]));
        assert_eq!(posted["description"], "first line\nsecond line", "as the browser posts it");
    }

    /// A rate limit the API refused comes back as typed, so the reader sees what to fix.
    #[test]
    fn a_refused_rate_limit_is_shown_as_typed() {
        let doc = document(&f(&[("name", "h"), ("rate_limit.per_second", "1.5")]));
        let errors = vec![("rate_limit.per_second".to_owned(), "must be a whole number".to_owned())];
        let page = hook_form(&session(), "/console/hooks/new", &doc, &errors, false).into_string();
        assert!(page.contains(r#"value="1.5""#), "{page}");
    }

    #[test]
    fn a_form_becomes_the_apis_document_with_only_the_chosen_auth_types_fields() {
        let doc = document(&f(&[
            ("name", "h"),
            ("url", "https://r.example/"),
            ("enabled", "true"),
            ("event_types", "user.*\n\n admin.CLIENT-*\n"),
            ("scope", "workspace"),
            ("sites", "ignored"),
            ("auth.type", "BASIC"),
            ("auth.username", "u"),
            ("auth.password", "p"),
            ("auth.key_value", "from another type"),
            ("headers[0].name", "X-A"),
            ("headers[0].value", "1"),
            ("headers[0].secret", "true"),
            ("headers[1].name", ""),
            ("headers[1].value", ""),
            ("rate_limit.per_second", "5"),
            ("retry_non_2xx", "true"),
        ]));
        assert_eq!(doc["auth"], json!({"type": "BASIC", "username": "u", "password": "p"}));
        assert_eq!(doc["event_types"], json!(["user.*", "admin.CLIENT-*"]));
        assert_eq!(doc["sites"], json!([]));
        assert_eq!(doc["headers"], json!([{"name": "X-A", "value": "1", "secret": true}]));
        assert_eq!((doc["enabled"].clone(), doc["rate_limit"].clone()), (json!(true), json!({"per_second": 5})));
        assert_eq!(doc.get("version"), None, "none in the form, none in the document");
        assert_eq!(document(&f(&[("name", "h"), ("version", "3")]))["version"], json!(3));
        let off = document(&f(&[("name", "h"), ("scope", "sites"), ("sites", "hq\nlab")]));
        assert_eq!((off["enabled"].clone(), off["sites"].clone()), (json!(false), json!(["hq", "lab"])));
        // Unchecked says false.
        assert_eq!((doc["retry_non_2xx"].clone(), off["retry_non_2xx"].clone()), (json!(true), json!(false)));
    }
}
