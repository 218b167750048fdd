//! Other products' subscription APIs over the same hooks, so a team moving off one of them
//! changes only a base URL: Keycloak (Phase Two)'s webhooks and ExtremeCloud IQ's webhook
//! subscriptions. Each is a thin adapter: it reads and writes hooks through the same code
//! as `/v1/hooks`, with that product's field names, status codes and error bodies.

pub mod keycloak;
mod keycloak_sends;
pub mod xiq;

use hookbridge_core::hook::{Hook, HookDraft, Undeliverable};
use hookbridge_core::secret::SigningSecret;
use serde_json::Value;

use crate::error::ApiError;

/// Whether `path` is one of the adapters': they answer a path whose escapes are not UTF-8
/// themselves, after the caller is checked and in their own error shape.
pub(crate) fn owns(path: &str) -> bool {
    product(path).is_some()
}

/// The products whose APIs are served here.
enum Product {
    Keycloak,
    Xiq,
}

/// Whose API `path` is under, if another product's.
fn product(path: &str) -> Option<Product> {
    if path.starts_with("/realms/") || path.starts_with("/auth/realms/") {
        Some(Product::Keycloak)
    } else if path.starts_with("/subscriptions/") {
        Some(Product::Xiq)
    } else {
        None
    }
}

/// `e` answered on `path` as its product answers: in Keycloak's or ExtremeCloud IQ's shape
/// on their paths (a route or method they do not have included), problem+json elsewhere.
pub(crate) fn error_at(path: &str, e: ApiError) -> axum::response::Response {
    use axum::response::IntoResponse;
    match product(path) {
        Some(Product::Keycloak) => keycloak::KeycloakError(e).into_response(),
        Some(Product::Xiq) => xiq::XiqError(e).into_response(),
        None => e.into_response(),
    }
}

/// A path's parameters, or `None` when their escapes are not UTF-8: no realm, webhook or
/// subscription has such a name.
fn segments<T>(path: Result<axum::extract::Path<T>, axum::extract::rejection::PathRejection>) -> Option<T> {
    path.ok().map(|axum::extract::Path(t)| t)
}

/// Whether `h` is switched on as these products mean it: enabled, and not disabled since
/// by the failure rule or a `410` (which a client of theirs can only see here). A hook
/// awaiting a challenge it requires reads on: these clients send back what they read, and
/// an `enabled: false` written back would keep it off once the challenge passes.
fn switched_on(h: &Hook) -> bool {
    matches!(h.deliverable(), Ok(()) | Err(Undeliverable::NotVerified))
}

/// A hook name no client chose: `{prefix}-` and a fresh ULID, lower-cased.
fn generated_name(prefix: &str) -> String {
    format!("{prefix}-{}", hookbridge_core::ids::HookId::generate().to_string().to_lowercase())
}

/// A draft from a JSON document built by an adapter.
fn draft(doc: Value) -> Result<HookDraft, ApiError> {
    serde_json::from_value(doc).map_err(|e| ApiError::field("body", e.to_string()))
}

/// The client's own signing secret, checked.
fn client_secret(secret: Option<&str>) -> Result<Option<SigningSecret>, ApiError> {
    secret.map(|s| SigningSecret::client_chosen(s).map_err(|e| ApiError::field("secret", e.to_string()))).transpose()
}

/// One line saying what is wrong, for products whose errors are a message, not a list.
fn message(e: &ApiError) -> String {
    let p = e.problem();
    if p.errors.is_empty() {
        return p.detail;
    }
    let fields: Vec<String> = p.errors.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
    fields.join("; ")
}
