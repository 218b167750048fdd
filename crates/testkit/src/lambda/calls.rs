//! What each function asks of AWS, as IAM would judge it. Each function reaches the
//! emulator through its own pass-through listener, which notes the IAM action every
//! request needs (`dynamodb:GetItem`, `sqs:SendMessage`) before passing it on unchanged.
//! The emulator does not enforce IAM, so this is how a test holds a function's calls to
//! the permissions `template.yaml` grants it: a call the template forgot works here and
//! is refused on AWS.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The IAM actions one function's requests needed so far.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<BTreeSet<String>>>);

impl Calls {
    /// The actions seen, e.g. `dynamodb:Query`.
    pub fn actions(&self) -> BTreeSet<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn note(&self, actions: impl IntoIterator<Item = String>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(actions);
    }
}

#[derive(Clone)]
struct Pass {
    upstream: String,
    http: reqwest::Client,
    calls: Calls,
}

/// Starts a pass-through to `upstream` (the emulator's endpoint); returns its address and
/// what it records.
pub async fn start(upstream: &str) -> std::io::Result<(SocketAddr, Calls, tokio::task::JoinHandle<()>)> {
    let calls = Calls::default();
    let pass = Pass {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::new(),
        calls: calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(pass);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, calls, task))
}

async fn forward(State(p): State<Pass>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    p.calls.note(iam_actions(&headers, &body));
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut req = p.http.request(method, format!("{}{path}", p.upstream)).body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            req = req.header(name, value);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            let mut out = Response::new(Body::from(body));
            *out.status_mut() = status;
            for (name, value) in &headers {
                if name != axum::http::header::CONTENT_LENGTH && name != axum::http::header::TRANSFER_ENCODING {
                    out.headers_mut().insert(name, value.clone());
                }
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// The IAM actions a request needs. JSON-protocol services name the operation in
/// `X-Amz-Target` (`DynamoDB_20120810.GetItem`); query-protocol ones in the form's `Action`.
/// Batches need their single operation's permission (SQS), and a DynamoDB transaction
/// needs the permission of each kind of item it holds.
pub fn iam_actions(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let (service, operation) = match target.and_then(|t| t.split_once('.')) {
        Some((prefix, op)) => (service_of(prefix), op.to_owned()),
        None => {
            let form = String::from_utf8_lossy(body);
            let action =
                url::form_urlencoded::parse(form.as_bytes()).find(|(k, _)| k == "Action").map(|(_, v)| v.into_owned());
            ("unknown".to_owned(), action.unwrap_or_else(|| "unknown".to_owned()))
        }
    };
    let operations: Vec<String> = match (service.as_str(), operation.as_str()) {
        ("sqs", op) if op.ends_with("Batch") => vec![op.trim_end_matches("Batch").to_owned()],
        ("dynamodb", "TransactWriteItems" | "TransactGetItems") => {
            let items = serde_json::from_slice::<Value>(body).ok();
            let kinds = items.as_ref().and_then(|v| v["TransactItems"].as_array()).into_iter().flatten();
            let mut ops: Vec<String> = kinds
                .filter_map(|item| item.as_object()?.keys().next().cloned())
                .map(|kind| match kind.as_str() {
                    "ConditionCheck" => "ConditionCheckItem".to_owned(),
                    other => format!("{other}Item"),
                })
                .collect();
            ops.sort();
            ops.dedup();
            ops
        }
        (_, op) => vec![op.to_owned()],
    };
    operations.into_iter().map(|op| format!("{service}:{op}")).collect()
}

/// The IAM service prefix for an `X-Amz-Target` prefix.
fn service_of(target_prefix: &str) -> String {
    match target_prefix {
        p if p.starts_with("DynamoDB_") => "dynamodb",
        "AmazonSQS" => "sqs",
        "AWSEvents" => "events",
        "TrentService" => "kms",
        "secretsmanager" => "secretsmanager",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", t.parse().unwrap());
        h
    }

    #[test]
    fn a_request_needs_the_permission_iam_names_for_it() {
        assert_eq!(iam_actions(&target("DynamoDB_20120810.GetItem"), b"{}"), ["dynamodb:GetItem"]);
        assert_eq!(iam_actions(&target("AmazonSQS.SendMessageBatch"), b"{}"), ["sqs:SendMessage"]);
        assert_eq!(iam_actions(&target("AmazonSQS.DeleteMessageBatch"), b"{}"), ["sqs:DeleteMessage"]);
        assert_eq!(iam_actions(&target("AWSEvents.PutEvents"), b"{}"), ["events:PutEvents"]);
        assert_eq!(iam_actions(&target("TrentService.Decrypt"), b"{}"), ["kms:Decrypt"]);
        let tx = br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}},{"Put":{}}]}"#;
        assert_eq!(
            iam_actions(&target("DynamoDB_20120810.TransactWriteItems"), tx),
            ["dynamodb:ConditionCheckItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
        );
        assert_eq!(iam_actions(&HeaderMap::new(), b"Action=GetQueueUrl&QueueName=x"), ["unknown:GetQueueUrl"]);
    }
}
