//! The console's requests are ordinary API requests, made in-process: the same router, the
//! same handlers, the same rules, with the session's caller handed over as a request
//! extension (which no client can set).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::Api;
use crate::auth::{Caller, ConsoleCaller};

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Answer {
    /// Whether it is a 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The problem's `detail`, or the status's reason.
    pub fn detail(&self) -> String {
        self.body["detail"].as_str().map_or_else(|| self.status.to_string(), str::to_owned)
    }

    /// The field errors of a `400`, as `(field, message)`.
    pub fn field_errors(&self) -> Vec<(String, String)> {
        self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["field"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned()))
            .collect()
    }
}

/// `method path` with `body`, as `caller`.
pub async fn call(api: &Api, caller: &Caller, method: Method, path: &str, body: Option<&Value>) -> Answer {
    call_keyed(api, caller, method, path, body, None).await
}

/// [`call`] with an `Idempotency-Key`: a form that carries one (made when the page was)
/// does what it asks once, however many times it is submitted.
pub async fn call_keyed(
    api: &Api,
    caller: &Caller,
    method: Method,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            serde_json::to_vec(b).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let Ok(mut req) = req.body(Body::from(bytes)) else {
        return Answer { status: StatusCode::BAD_REQUEST, body: Value::Null };
    };
    req.extensions_mut().insert(ConsoleCaller(caller.clone()));
    let resp = match crate::api_router(api.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}
