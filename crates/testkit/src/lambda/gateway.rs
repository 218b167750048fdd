//! API Gateway's HTTP API in front of the API function: each HTTP request becomes a
//! payload-2.0 event (`$default` route and stage, headers joined as API Gateway joins
//! them, the body base64-encoded unless it is text), and the function's response becomes
//! the HTTP response.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::runtime::{Function, Outcome};

/// The largest request body API Gateway passes on.
const MAX_BODY: usize = 10 * 1024 * 1024;

fn is_text(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("text/") || ct.contains("json") || ct.contains("xml") || ct.contains("x-www-form-urlencoded")
    })
}

/// The payload-2.0 event of a request.
pub fn event_of(method: &str, uri: &axum::http::Uri, headers: &axum::http::HeaderMap, body: &[u8]) -> Value {
    let mut joined: Map<String, Value> = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(v.split(';').map(|c| Value::String(c.trim().to_owned())));
            continue;
        }
        match joined.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                joined.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let text = is_text(content_type) && std::str::from_utf8(body).is_ok();
    let now = chrono::Utc::now();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": joined,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": hookbridge_core::ids::DeliveryId::generate().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": !text,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !body.is_empty() {
        event["body"] =
            Value::String(if text { String::from_utf8_lossy(body).into_owned() } else { STANDARD.encode(body) });
    }
    event
}

/// The HTTP response of a function's payload-2.0 response.
pub fn response_of(payload: &[u8]) -> Response {
    let doc: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let status = doc["statusCode"].as_u64().and_then(|s| StatusCode::from_u16(s as u16).ok()).unwrap_or(StatusCode::OK);
    let body = match doc["body"].as_str() {
        Some(b) if doc["isBase64Encoded"] == true => STANDARD.decode(b).unwrap_or_default(),
        Some(b) => b.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    for (k, v) in doc["headers"].as_object().into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (HeaderName::try_from(k.as_str()), v.as_str().map(HeaderValue::from_str)) {
            h.insert(name, value);
        }
    }
    for (k, vs) in doc["multiValueHeaders"].as_object().into_iter().flatten() {
        if let Ok(name) = HeaderName::try_from(k.as_str()) {
            h.remove(&name);
            for v in vs.as_array().into_iter().flatten().filter_map(Value::as_str) {
                if let Ok(value) = HeaderValue::from_str(v) {
                    h.append(name.clone(), value);
                }
            }
        }
    }
    for c in doc["cookies"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Ok(value) = HeaderValue::from_str(c) {
            h.append("set-cookie", value);
        }
    }
    resp
}

/// Serves every request through the API function.
pub async fn handle(State(api): State<Arc<Function>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let mut r = Response::new(Body::from(r#"{"message":"Request Entity Too Large"}"#));
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return r;
        }
    };
    let event = event_of(parts.method.as_str(), &parts.uri, &parts.headers, &bytes);
    match api.invoke(serde_json::to_vec(&event).unwrap_or_default()).await {
        Outcome::Response(payload) => response_of(&payload),
        // What API Gateway answers when the integration fails or times out.
        Outcome::Error(_) => {
            let mut r = Response::new(Body::from(r#"{"message":"Internal Server Error"}"#));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        Outcome::TimedOut => {
            let mut r = Response::new(Body::from(r#"{"message":"Service Unavailable"}"#));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}
