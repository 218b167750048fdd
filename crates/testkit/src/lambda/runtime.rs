//! One function as Lambda runs it: its compiled binary, started as a process that polls a
//! Runtime API this module serves on 127.0.0.1 (`next`, `response`, `error`, `init/error`,
//! with the request-id, deadline and function-ARN headers), one invocation per process at
//! a time. Everything the process prints is kept, for tests that read its log lines and
//! EMF metrics.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, oneshot};

/// What became of an invocation.
#[derive(Debug)]
pub enum Outcome {
    /// The function's response payload.
    Response(Vec<u8>),
    /// The function reported an error (its error document).
    Error(String),
    /// No answer before the deadline (Lambda would have stopped the invocation).
    TimedOut,
}

struct Pending {
    id: String,
    payload: Vec<u8>,
    /// How long the invocation may run once a process takes it: Lambda dates the deadline
    /// from the start, not from when the invocation was asked for.
    timeout: Duration,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Pending>>,
    ready: Notify,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_errors: Mutex<Vec<String>>,
    arn: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    let p = loop {
        let waiting = s.ready.notified();
        if let Some(p) = lock(&s.queue).pop_front() {
            break p;
        }
        waiting.await;
    };
    lock(&s.in_flight).insert(p.id.clone(), p.reply);
    let deadline_ms = chrono::Utc::now().timestamp_millis() + p.timeout.as_millis() as i64;
    let mut headers = HeaderMap::new();
    let h = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
    headers.insert("lambda-runtime-aws-request-id", h(&p.id));
    headers.insert("lambda-runtime-deadline-ms", h(&deadline_ms.to_string()));
    headers.insert("lambda-runtime-invoked-function-arn", h(&s.arn));
    headers
        .insert("lambda-runtime-trace-id", h(&format!("Root=1-00000000-{}", p.id.replace('-', "")[..24].to_owned())));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    (headers, p.payload).into_response()
}

async fn respond(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    match lock(&s.in_flight).remove(&id) {
        Some(reply) => {
            let _ = reply.send(Outcome::Response(body.to_vec()));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn fail(State(s): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    match lock(&s.in_flight).remove(&id) {
        Some(reply) => {
            let _ = reply.send(Outcome::Error(String::from_utf8_lossy(&body).into_owned()));
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    lock(&s.init_errors).push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

/// A function: its Runtime API and the processes polling it.
pub struct Function {
    name: String,
    shared: Arc<Shared>,
    timeout: Duration,
    output: Arc<Mutex<Vec<String>>>,
    processes: Vec<tokio::process::Child>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.server.abort();
        for p in &mut self.processes {
            let _ = p.start_kill();
        }
    }
}

impl Function {
    /// Starts `instances` processes of `binary` as the function `name`, with `env` (its
    /// configuration, as the template sets it) and Lambda's own variables; each invocation
    /// may take `timeout`.
    pub async fn start(
        name: &str,
        binary: &Path,
        env: &[(String, String)],
        instances: usize,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut processes = Vec::with_capacity(instances);
        for i in 0..instances {
            let mut child = tokio::process::Command::new(binary)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
                .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("instance-{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            for stream in
                [child.stdout.take().map(either_out), child.stderr.take().map(either_err)].into_iter().flatten()
            {
                let output = output.clone();
                let echo = std::env::var_os("HOOKBRIDGE_LAMBDA_ECHO").is_some();
                let label = name.to_owned();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if echo {
                            eprintln!("[{label}] {line}");
                        }
                        lock(&output).push(line);
                    }
                });
            }
            processes.push(child);
        }
        Ok(Self { name: name.to_owned(), shared, timeout, output, processes, server })
    }

    /// Invokes it with `payload` and waits for the outcome.
    pub async fn invoke(&self, payload: Vec<u8>) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let id = hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase();
        lock(&self.shared.queue).push_back(Pending { id: id.clone(), payload, timeout: self.timeout, reply: tx });
        self.shared.ready.notify_one();
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                // One no process took yet is not run later: its caller (a gateway that
                // answered 503, an event source that will receive the batch again) has
                // given up on it, and its work done afterwards would be a surprise.
                lock(&self.shared.queue).retain(|p| p.id != id);
                lock(&self.shared.in_flight).remove(&id);
                Outcome::TimedOut
            }
        }
    }

    /// Every line its processes printed so far (stdout and stderr).
    pub fn output(&self) -> Vec<String> {
        lock(&self.output).clone()
    }

    /// Errors its processes reported while starting.
    pub fn init_errors(&self) -> Vec<String> {
        lock(&self.shared.init_errors).clone()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

type Stream = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

fn either_out(s: tokio::process::ChildStdout) -> Stream {
    Box::new(s)
}

fn either_err(s: tokio::process::ChildStderr) -> Stream {
    Box::new(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    /// No process here: the test takes invocations from the Runtime API itself.
    async fn function(timeout: Duration) -> Arc<Function> {
        Arc::new(Function::start("f", Path::new("/bin/true"), &[], 0, timeout).await.unwrap())
    }

    #[tokio::test]
    async fn an_invocation_given_up_on_before_it_started_never_starts() {
        let f = function(Duration::from_millis(200)).await;
        assert!(matches!(f.invoke(b"{}".to_vec()).await, Outcome::TimedOut));
        assert!(lock(&f.shared.queue).is_empty(), "still queued for the next process");
    }

    #[tokio::test]
    async fn an_invocations_deadline_counts_from_when_it_starts() {
        let f = function(Duration::from_secs(10)).await;
        let invoking = tokio::spawn({
            let f = f.clone();
            async move { f.invoke(b"{}".to_vec()).await }
        });
        // Waiting a second for a process, as behind a busy function's other invocations.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let taken = next(State(f.shared.clone())).await;
        let header = |name: &str| taken.headers()[name].to_str().unwrap().to_owned();
        let deadline_ms: i64 = header("lambda-runtime-deadline-ms").parse().unwrap();
        let left = deadline_ms - chrono::Utc::now().timestamp_millis();
        assert!(left > 9_500, "{left} ms left of 10 s, a second after it was asked for");
        let id = header("lambda-runtime-aws-request-id");
        assert_eq!(
            respond(State(f.shared.clone()), UrlPath(id), Bytes::from_static(b"ok")).await,
            StatusCode::ACCEPTED
        );
        assert!(matches!(invoking.await.unwrap(), Outcome::Response(body) if body == b"ok"));
    }
}
