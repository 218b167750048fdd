//! One delivery attempt: build the request (auth, headers, signatures over the exact
//! body), send it, and report the outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use hookbridge_core::delivery::{Attempt, ErrorClass, RESPONSE_EXCERPT_BYTES, excerpt};
use hookbridge_core::hook::{AuthConfig, Hook, HookConfig, HookSecrets, SignatureFormat};
use hookbridge_core::ids::DeliveryId;
use hookbridge_core::outcome::{Sent, error_class};
use hookbridge_core::retry::parse_retry_after;
use hookbridge_core::secret::{Secret, redact};
use hookbridge_core::signing;

use crate::Outbound;
use crate::auth::{TokenError, TokenWanted, static_auth_header};
use crate::classify::{self, describe};

/// The longest an answer's body is read for the attempt's record after its status came
/// (within the attempt's budget). The status is the outcome; read to the budget, a
/// receiver that answered at once and left its body unfinished held its lane's place for
/// the whole budget, and was judged as slow as one that never answered: kept on the slow
/// lane for good, a delivery every timeout per place.
pub const BODY_READ_AT_MOST: std::time::Duration = std::time::Duration::from_millis(250);

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRequest<'a> {
    /// The hook (its config decides method, URL, auth, headers and signatures).
    pub hook: &'a Hook,
    /// Its opened secrets.
    pub secrets: &'a HookSecrets,
    /// The delivery, which is also the `webhook-id`.
    pub delivery_id: DeliveryId,
    /// The envelope, exactly as it will be signed and sent.
    pub body: &'a str,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    /// The result, for the core's decision.
    pub sent: Sent,
    /// The attempt to record (its number is assigned by the store).
    pub attempt: Attempt,
    /// Whether it got as far as the receiver (a request to it was begun). One that ended
    /// before, waiting for its token or refused its address, says nothing of the
    /// receiver's pace.
    pub reached: bool,
    /// How much of the attempt's duration was the receiver's: the whole of it less the
    /// time spent getting a token (before the request, or after a `401`). A slow identity
    /// provider is not the receiver's pace.
    pub receiver_ms: u64,
    /// Whether the budget ran out while a token was being fetched: before the request, or
    /// after the receiver refused the cached token with a `401` (it answered, so it is up).
    pub token_pending: bool,
}

impl AttemptReport {
    fn new(sent: Sent, at: DateTime<Utc>, started: Instant, excerpt_text: Option<String>) -> Self {
        let status_code = match sent {
            Sent::Response { status, .. } => Some(status),
            Sent::NoResponse(_) => None,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        Self {
            sent,
            receiver_ms: duration_ms,
            attempt: Attempt {
                attempt: 0,
                at,
                duration_ms,
                status_code,
                error_class: error_class(sent),
                response_excerpt: excerpt_text,
            },
            reached: true,
            token_pending: false,
        }
    }

    /// Whether the attempt ran out of time waiting for a token: the first, before its
    /// request began, or a new one after the receiver refused the cached one; or got its
    /// token so late (after more than half the attempt) that the receiver had less than
    /// half of it. A receiver that answers in 3 s, given the last 3 s of an attempt whose
    /// token took 7, had its circuit opened by a slow identity provider. (Less than half
    /// the attempt spent on the token still leaves a dead receiver its timeouts, so its
    /// circuit opens even when every attempt fetches a token.)
    pub fn timed_out_waiting_for_its_token(&self) -> bool {
        self.sent == Sent::NoResponse(ErrorClass::Timeout)
            && (self.token_pending || self.receiver_ms.saturating_mul(2) < self.attempt.duration_ms)
    }

    /// Reads such an attempt as what it is when it counts: no token, so `auth`, which
    /// says nothing of whether the receiver is up (a timeout would count towards opening
    /// its circuit).
    pub fn counted_as_tokenless(mut self) -> Self {
        self.sent = Sent::NoResponse(ErrorClass::Auth);
        self.attempt.error_class = error_class(self.sent);
        self
    }

    fn failed(class: ErrorClass, at: DateTime<Utc>, started: Instant, why: String) -> Self {
        Self::new(Sent::NoResponse(class), at, started, Some(excerpt(&why)))
    }
}

/// An attempt's waits for its token: when the one under way began, and how long the
/// ended ones took.
#[derive(Default)]
struct TokenWait {
    began: std::sync::Mutex<Option<Instant>>,
    ended_us: AtomicU64,
}

impl TokenWait {
    /// Runs a token fetch, counting it as waiting for the token.
    async fn timed<T>(&self, fetch: impl std::future::Future<Output = T>) -> T {
        *self.began.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let out = fetch.await;
        if let Some(began) = self.began.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            self.ended_us.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        out
    }

    /// Whether a fetch is under way (the attempt is waiting for its token).
    fn fetching(&self) -> bool {
        self.began.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    /// The whole wait, in milliseconds: a fetch cut off by the deadline counts until now.
    fn total_ms(&self) -> u64 {
        let running = self.began.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map(|b| b.elapsed());
        (self.ended_us.load(Ordering::Relaxed) + running.map_or(0, |r| r.as_micros() as u64)) / 1000
    }
}

/// A receiver's answer, its body not read yet.
struct Answer {
    response: reqwest::Response,
    /// The request counted against the pool until its answer is read.
    _in_use: Option<crate::pool::InUse>,
    /// The bearer token the answered request carried, if any.
    token: Option<Secret>,
    status: u16,
    retry_after: Option<std::time::Duration>,
    at: DateTime<Utc>,
    started: Instant,
}

enum AuthHeader {
    None,
    Static(String, String),
    Bearer(Secret),
}

impl Outbound {
    /// Sends one attempt within `budget`, everything included: the token fetch, the
    /// request, a refresh after a 401 and the request again. What is not answered by then
    /// is a `timeout`, so a delivery never takes longer than its lane allows. An answer's
    /// status is its outcome however its body goes: the body is read for the record only
    /// for [`BODY_READ_AT_MOST`] more, within the same deadline, so a receiver that answered
    /// `200` and left its body unfinished has its `200`, not a timeout and the event sent
    /// again, and its pace is that of its answer.
    pub async fn deliver_within(&self, req: DeliveryRequest<'_>, budget: std::time::Duration) -> AttemptReport {
        let at = Utc::now();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + budget;
        let (wait, reached) = (TokenWait::default(), AtomicBool::new(false));
        let mut report = match tokio::time::timeout_at(deadline, self.answer(req, &wait, &reached)).await {
            Ok(Ok(answer)) => {
                let body_until = deadline.min(tokio::time::Instant::now() + BODY_READ_AT_MOST);
                let (body, cut) = read_excerpt_until(answer.response, body_until).await;
                let body = without_secrets(&body, &req.hook.config, req.secrets, answer.token.as_ref());
                let text = with_note(&body, cut);
                let sent = Sent::Response { status: answer.status, retry_after: answer.retry_after };
                AttemptReport::new(sent, answer.at, answer.started, Some(text))
            }
            Ok(Err(report)) => *report,
            // The token endpoint's slowness, not the receiver's (`reached` says whether a
            // request to it had been made before).
            Err(_) if wait.fetching() => AttemptReport::failed(
                ErrorClass::Timeout,
                at,
                started,
                format!(
                    "the token fetch did not end within the attempt's {} ms (it goes on, for the next attempt)",
                    budget.as_millis()
                ),
            ),
            Err(_) => {
                let waited = match wait.total_ms() {
                    0 => String::new(),
                    ms => format!(" ({ms} ms of them spent getting its token)"),
                };
                AttemptReport::failed(
                    ErrorClass::Timeout,
                    at,
                    started,
                    format!("no answer within {} ms{waited}", budget.as_millis()),
                )
            }
        };
        report.reached = reached.load(Ordering::Relaxed);
        report.token_pending = wait.fetching();
        report.receiver_ms = report.attempt.duration_ms.saturating_sub(wait.total_ms());
        report
    }

    /// Sends one attempt as far as the receiver's answer (its status and headers); a
    /// failure before any answer is the attempt's report.
    /// `wait` times its waits for a token; `reached` turns true when a request to the
    /// receiver begins.
    async fn answer(
        &self,
        req: DeliveryRequest<'_>,
        wait: &TokenWait,
        reached: &AtomicBool,
    ) -> Result<Answer, Box<AttemptReport>> {
        let at = Utc::now();
        let started = Instant::now();
        let failed = |class, why: String| Box::new(AttemptReport::failed(class, at, started, why));
        let cfg = &req.hook.config;
        let url = url::Url::parse(&cfg.url).map_err(|e| failed(ErrorClass::Connect, format!("invalid url: {e}")))?;
        if let Err(refused) = crate::resolver::check_target(&self.settings.network, &url) {
            return Err(failed(ErrorClass::SsrfBlocked, refused.to_string()));
        }

        let oauth = match &cfg.auth {
            AuthConfig::OauthClientCredentials(o) => Some(o),
            _ => None,
        };
        let mut auth = match (oauth, static_auth_header(&cfg.auth, req.secrets)) {
            (Some(o), _) => {
                let token = wait.timed(self.oauth_token(req.hook.id, o, req.secrets, TokenWanted::Cached)).await;
                match token {
                    Ok(t) => AuthHeader::Bearer(t),
                    Err(e) => return Err(failed(token_failure(&e), e.to_string())),
                }
            }
            (None, Some((k, v))) => AuthHeader::Static(k, v),
            (None, None) => AuthHeader::None,
        };

        let mut renewed = false;
        loop {
            reached.store(true, Ordering::Relaxed);
            let (response, in_use) = match self.send_once(&req, &url, &auth).await {
                Ok(r) => r,
                Err(e) => return Err(failed(classify::error_class(&e), describe(&e))),
            };
            let status = response.status().as_u16();
            // A 401 to a cached token: the token may have been revoked early. Fetch a new
            // one once and try again at once, within this attempt.
            if status == 401
                && !renewed
                && let Some(o) = oauth
            {
                renewed = true;
                let refused = match &auth {
                    AuthHeader::Bearer(t) => t.clone(),
                    AuthHeader::None | AuthHeader::Static(..) => Secret::new(""),
                };
                let token = wait.timed(self.oauth_token(req.hook.id, o, req.secrets, TokenWanted::Not(&refused))).await;
                match token {
                    // No newer token to try: the refusal stands.
                    Ok(t) if t.expose() == refused.expose() => {}
                    Ok(t) => {
                        auth = AuthHeader::Bearer(t);
                        continue;
                    }
                    Err(e) => return Err(failed(token_failure(&e), e.to_string())),
                }
            }
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let token = match auth {
                AuthHeader::Bearer(t) => Some(t),
                AuthHeader::None | AuthHeader::Static(..) => None,
            };
            return Ok(Answer { response, _in_use: in_use, token, status, retry_after, at, started });
        }
    }

    async fn send_once(
        &self,
        req: &DeliveryRequest<'_>,
        url: &url::Url,
        auth: &AuthHeader,
    ) -> reqwest::Result<(reqwest::Response, Option<crate::pool::InUse>)> {
        let cfg = &req.hook.config;
        let method = reqwest::Method::from_bytes(cfg.method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
        let id = req.delivery_id.to_string();
        // Signed at send time, so a retry carries a fresh timestamp within the receiver's tolerance.
        let now = Utc::now();
        let body = req.body.as_bytes();
        let (client, in_use) = self.client_for(url);
        let mut r = client
            .request(method, url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER_ID, &id)
            .header(signing::HEADER_TIMESTAMP, now.timestamp())
            .header(
                signing::HEADER_SIGNATURE,
                signing::standard_signature_header(req.secrets.signing_at(now), &id, now.timestamp(), body),
            );
        if cfg.signature_formats.contains(&SignatureFormat::Keycloak) {
            r = r.header(signing::HEADER_KEYCLOAK, signing::keycloak_signature(&req.secrets.signing, body));
        }
        for (name, value) in custom_headers(cfg, Some(req.secrets)) {
            r = r.header(name, value);
        }
        r = match auth {
            AuthHeader::None => r,
            AuthHeader::Static(k, v) => r.header(k.as_str(), v.as_str()),
            AuthHeader::Bearer(t) => r.header(http::header::AUTHORIZATION, format!("Bearer {}", t.expose())),
        };
        let resp = r.body(req.body.to_owned()).send().await?;
        let version = resp.version();
        Ok((
            resp,
            in_use.map(|mut u| {
                u.answered(version);
                u
            }),
        ))
    }
}

/// The hook's own headers with their values: the plain ones, and the secret ones when
/// `secrets` are open.
pub(crate) fn custom_headers<'a>(
    cfg: &'a HookConfig,
    secrets: Option<&'a HookSecrets>,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    cfg.headers.iter().filter_map(move |h| {
        let value = match &h.value {
            Some(v) => v.as_str(),
            None => secrets?.headers.get(&h.name.to_ascii_lowercase())?.expose(),
        };
        Some((h.name.as_str(), field_value(value)))
    })
}

/// A header value a hook gave, as it is sent: without the spaces and tabs around it. An
/// HTTP/1.1 receiver drops them (RFC 9110 5.5), so they were never part of the value; an
/// HTTP/2 receiver refuses the whole request as malformed (RFC 9113 8.2.1), so a pasted
/// key with a trailing space failed every delivery over HTTP/2 and none over HTTP/1.1.
pub(crate) fn field_value(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// `text` (a receiver's answer) without any secret value the hook's requests carry
/// ([`redact`]): its secrets as stored, a Basic credential as encoded, and `token`, the
/// bearer token the request carried.
pub(crate) fn without_secrets(text: &str, cfg: &HookConfig, secrets: &HookSecrets, token: Option<&Secret>) -> String {
    if text.is_empty() {
        return String::new();
    }
    let basic = static_auth_header(&cfg.auth, secrets).and_then(|(_, v)| v.strip_prefix("Basic ").map(str::to_owned));
    let mut values = secrets.all_values();
    values.extend(basic.as_deref());
    values.extend(token.map(Secret::expose));
    redact(text, &values)
}

/// The class of an attempt that could not have its token: a token URL at an address the
/// deployment does not allow is `ssrf_blocked`, failed at once as for `url`; any other
/// failure is `auth`, tried again.
fn token_failure(e: &TokenError) -> ErrorClass {
    match e {
        TokenError::Request { class: ErrorClass::SsrfBlocked, .. } => ErrorClass::SsrfBlocked,
        TokenError::Request { .. } | TokenError::Rejected { .. } => ErrorClass::Auth,
    }
}

/// Reads at most `max` bytes of a body as text and drops the rest unread, so an endpoint
/// answering with megabytes costs us nothing.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> reqwest::Result<String> {
    match read_start(resp, max, None).await {
        (_, Some(Cut::Closed(e))) => Err(e),
        (text, _) => Ok(text),
    }
}

/// Why a body's start was read short of its cap and its end.
enum Cut {
    /// The connection failed mid-body.
    Closed(reqwest::Error),
    /// The deadline passed first.
    Late,
}

/// Up to `max` bytes of a body as text (a character the cap cuts in two left out), read
/// until `deadline` if there is one, and what cut it short, if anything did.
async fn read_start(
    mut resp: reqwest::Response,
    max: usize,
    deadline: Option<tokio::time::Instant>,
) -> (String, Option<Cut>) {
    let mut buf: Vec<u8> = Vec::new();
    let cut = loop {
        if buf.len() >= max {
            break None;
        }
        let chunk = match deadline {
            Some(d) => tokio::time::timeout_at(d, resp.chunk()).await,
            None => Ok(resp.chunk().await),
        };
        match chunk {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Ok(None)) => break None,
            Ok(Err(e)) => break Some(Cut::Closed(e)),
            Err(_) => break Some(Cut::Late),
        }
    };
    buf.truncate(max);
    drop_cut_char(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), cut)
}

/// Drops a UTF-8 character the cap cut in two: shown, it would end the excerpt with a
/// U+FFFD the receiver never sent.
fn drop_cut_char(buf: &mut Vec<u8>) {
    let len = buf.len();
    for back in 1..=len.min(4) {
        let b = buf[len - back];
        if b & 0xC0 != 0x80 {
            let needs = match b {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            if needs > back {
                buf.truncate(len - back);
            }
            return;
        }
    }
}

/// The start of a response body for the attempt record (a body cut short by an error is
/// recorded as far as it came, or not at all).
/// The start of an answer's body, read until `deadline`, and why it stops short when it
/// does: what came of a body cut off (the connection closed, the time ran out) is kept.
/// Thrown away, a 503 page cut after its first kilobyte left the attempt saying nothing.
async fn read_excerpt_until(resp: reqwest::Response, deadline: tokio::time::Instant) -> (String, Option<&'static str>) {
    let (text, cut) = read_start(resp, RESPONSE_EXCERPT_BYTES, Some(deadline)).await;
    let note = cut.map(|c| match c {
        Cut::Closed(_) => "(the connection closed before the body ended)",
        Cut::Late => "(the body did not arrive in time)",
    });
    (text, note)
}

/// The excerpt of `body` (secrets already taken out), with `cut`'s note after it, within
/// the excerpt's bytes.
fn with_note(body: &str, cut: Option<&str>) -> String {
    let Some(note) = cut else {
        return excerpt(body);
    };
    if body.is_empty() {
        return note.to_owned();
    }
    let mut end = body.len().min(RESPONSE_EXCERPT_BYTES.saturating_sub(note.len() + 1));
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} {note}", &body[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use hookbridge_core::hook::NetworkPolicy;
    use hookbridge_core::ids::HookId;
    use hookbridge_core::outcome::{Disposition, classify};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A character the cap cuts in two is left out, not shown as U+FFFD.
    #[test]
    fn a_character_cut_by_the_cap_is_dropped() {
        for (text, cut_at, kept) in [("ab😀", 5, "ab"), ("ab😀", 6, "ab😀"), ("abé", 3, "ab"), ("abc", 3, "abc")]
        {
            let mut buf = text.as_bytes()[..cut_at.min(text.len())].to_vec();
            super::drop_cut_char(&mut buf);
            assert_eq!(String::from_utf8(buf).unwrap(), kept, "{text} cut at {cut_at}");
        }
    }

    use super::*;

    /// A receiver that answers one request with `answer` (a head promising more body than
    /// it holds), then holds the connection open for `held`, then closes it.
    async fn answers_short(answer: &'static [u8], held: Duration) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut request).await;
            let _ = conn.write_all(answer).await;
            tokio::time::sleep(held).await;
        });
        (url, task)
    }

    /// The spaces and tabs around a header value the hook gave are not sent: HTTP/2
    /// receivers refuse a request whose field value begins or ends with one.
    #[tokio::test]
    async fn header_values_are_sent_without_the_spaces_around_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let head = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the request ended before its head");
                request.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let (hook, secrets) = hook_of(serde_json::json!({
            "name": "h", "url": url,
            "headers": [{"name": "X-Tag", "value": " plain\t"}, {"name": "X-Token", "value": "kept secret ", "secret": true}],
            "auth": {"type": "API_KEY", "key_name": "k", "key_value": "k-123 "},
        }));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = local_outbound().deliver_within(req, Duration::from_secs(5)).await;
        assert_eq!(report.attempt.status_code, Some(204));
        let head = head.await.unwrap().to_ascii_lowercase();
        for sent in ["\r\nx-tag: plain\r\n", "\r\nx-token: kept secret\r\n", "\r\nauthorization: bearer k-123\r\n"] {
            assert!(head.contains(sent), "{sent:?} not in {head}");
        }
    }

    /// A receiver that answers `200` with its headers and the start of a body it never
    /// finishes, holding the connection open.
    async fn answers_and_stalls() -> (String, tokio::task::JoinHandle<()>) {
        answers_short(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nreceived, thank", Duration::from_secs(60)).await
    }

    /// The status is the outcome: a receiver that accepted the event and left its body
    /// unfinished has its `200` recorded, not a timeout (which sent the event again, and on
    /// the slow lane counted the endpoint as down).
    #[tokio::test]
    async fn an_answer_whose_body_never_finishes_keeps_its_status() {
        let (url, receiver) = answers_and_stalls().await;
        let network = NetworkPolicy::local();
        let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url}));
        let outbound = Outbound::new(crate::OutboundSettings { timeout: Duration::from_secs(30), network }).unwrap();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = outbound.deliver_within(req, Duration::from_millis(500)).await;
        assert_eq!(report.sent, Sent::Response { status: 200, retry_after: None });
        assert_eq!(classify(report.sent), Disposition::Delivered);
        assert_eq!(report.attempt.status_code, Some(200));
        let text = report.attempt.response_excerpt.unwrap();
        assert_eq!(text, "received, thank (the body did not arrive in time)", "what came is kept");
        receiver.abort();
    }

    /// A body left unfinished is read for the record only briefly after its status: the
    /// attempt, and the receiver's pace the lanes judge it by, are the answer's, not the
    /// whole budget's (which kept a hook answering at once on the slow lane for good).
    #[tokio::test]
    async fn an_unfinished_body_is_read_briefly_not_for_the_whole_budget() {
        let (url, receiver) = answers_and_stalls().await;
        let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url}));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let budget = Duration::from_secs(10);
        let report = local_outbound().deliver_within(req, budget).await;
        assert_eq!(report.sent, Sent::Response { status: 200, retry_after: None });
        assert!(report.receiver_ms < budget.as_millis() as u64 / 2, "{} ms", report.receiver_ms);
        assert_eq!(
            report.attempt.response_excerpt.as_deref(),
            Some("received, thank (the body did not arrive in time)")
        );
        receiver.abort();
    }

    /// A body the connection cut off keeps what came of it, and says so.
    #[tokio::test]
    async fn a_body_cut_off_keeps_what_came_of_it() {
        // Closed at once, with most of the body unsent.
        let answer = b"HTTP/1.1 503 Busy\r\ncontent-length: 5000\r\n\r\nupstream overloaded";
        let (url, receiver) = answers_short(answer, Duration::ZERO).await;
        let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url}));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = local_outbound().deliver_within(req, Duration::from_secs(5)).await;
        assert_eq!(report.attempt.status_code, Some(503));
        let text = report.attempt.response_excerpt.unwrap();
        assert_eq!(text, "upstream overloaded (the connection closed before the body ended)");
        receiver.abort();
    }

    #[test]
    fn a_note_fits_within_the_excerpt() {
        let long = "é".repeat(RESPONSE_EXCERPT_BYTES);
        let text = with_note(&long, Some("(cut)"));
        assert!(text.len() <= RESPONSE_EXCERPT_BYTES && text.ends_with("é (cut)"), "{}", text.len());
        assert_eq!(with_note("", Some("(cut)")), "(cut)");
        assert_eq!(with_note("whole", None), "whole");
    }

    /// A receiver that answers each request `status` with the request itself (its head and
    /// body) as the body, as echo services and debug endpoints do.
    pub(crate) async fn echoes(status: u16) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 64 * 1024];
                let n = conn.read(&mut request).await.unwrap_or(0);
                let head = format!("HTTP/1.1 {status} Echo\r\nconnection: close\r\ncontent-length: {n}\r\n\r\n");
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&request[..n]).await;
            }
        });
        (url, task)
    }

    /// A receiver that echoes the request shows none of the hook's credentials in the
    /// attempt's excerpt (kept in clear and shown to the hook's readers): not a secret
    /// header's value, not a Basic password, nor its encoded form.
    #[tokio::test]
    async fn an_echoed_request_keeps_no_credential_in_the_excerpt() {
        let (url, receiver) = echoes(401).await;
        let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url,
            "auth": {"type": "BASIC", "username": "svc", "password": "pw-secret-123"},
            "headers": [{"name": "X-Token", "value": "header-secret-456", "secret": true}]}));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = local_outbound().deliver_within(req, Duration::from_secs(5)).await;
        let text = report.attempt.response_excerpt.unwrap();
        assert!(text.contains("x-token: [redacted]"), "the request was echoed: {text}");
        let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "svc:pw-secret-123");
        for secret in ["pw-secret-123", "header-secret-456", basic.as_str()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        receiver.abort();
    }

    /// Nor the bearer token an OAuth hook's request carried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_echoed_request_keeps_no_bearer_token_in_the_excerpt() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "tok-789-abc", "expires_in": 3600}"#));
        let (url, receiver) = echoes(200).await;
        let (hook, secrets) = oauth_hook(&url, &idp.url("/token"));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = local_outbound().deliver_within(req, Duration::from_secs(5)).await;
        let text = report.attempt.response_excerpt.unwrap();
        assert!(text.contains("authorization: Bearer [redacted]"), "the request was echoed: {text}");
        assert!(!text.contains("tok-789-abc"), "{text}");
        receiver.abort();
    }

    fn hook_of(draft: serde_json::Value) -> (Hook, HookSecrets) {
        hookbridge_testkit::contract::unsealed_hook("acme", HookId::generate(), draft)
    }

    /// A client allowed to reach loopback.
    pub(crate) fn local_outbound() -> Outbound {
        Outbound::new(crate::OutboundSettings { timeout: Duration::from_secs(10), network: NetworkPolicy::local() })
            .unwrap()
    }

    /// A receiver that answers every request `200` after `delay` and keeps its connections
    /// open, counting the connections it accepted and those still open.
    async fn keeps_connections(delay: Duration) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 64 * 1024];
                    // A request's head and its two-byte body come in one read.
                    while conn.read(&mut request).await.is_ok_and(|n| n > 0) {
                        tokio::time::sleep(delay).await;
                        if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            break;
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, accepted, open)
    }

    /// At most so many connections are kept open between requests: past them, each
    /// request's connection is closed when it is done, while the kept ones are reused.
    /// (Unbounded, a worker reaching a thousand endpoints would hold a thousand sockets.)
    #[tokio::test]
    async fn connections_are_kept_open_up_to_the_budget_across_receivers() {
        let settings = crate::OutboundSettings { timeout: Duration::from_secs(10), network: NetworkPolicy::local() };
        let outbound = Outbound::keeping(settings, 2).unwrap();
        let mut receivers = Vec::new();
        for _ in 0..5 {
            receivers.push(keeps_connections(Duration::ZERO).await);
        }
        let send = |url: &str| {
            let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url}));
            let outbound = outbound.clone();
            async move {
                let req =
                    DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
                outbound.deliver_within(req, Duration::from_secs(5)).await.sent
            }
        };
        for _ in 0..2 {
            for (url, _, _) in &receivers {
                assert_eq!(send(url).await, Sent::Response { status: 200, retry_after: None });
            }
        }
        let open = || receivers.iter().map(|(_, _, open)| open.load(Ordering::SeqCst)).collect::<Vec<_>>();
        for _ in 0..100 {
            if open() == [1, 1, 0, 0, 0] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(open(), [1, 1, 0, 0, 0], "only the first two receivers' connections are kept open");
        let accepted: Vec<usize> = receivers.iter().map(|(_, accepted, _)| accepted.load(Ordering::SeqCst)).collect();
        assert_eq!(accepted, [1, 1, 2, 2, 2], "a kept receiver's second request reused its connection");
    }

    /// One receiver sent three requests at once holds a connection for each while they
    /// last; with two in the budget, the third is closed when it is done.
    #[tokio::test]
    async fn requests_at_once_past_the_budget_leave_no_connection_open() {
        let settings = crate::OutboundSettings { timeout: Duration::from_secs(10), network: NetworkPolicy::local() };
        let outbound = Outbound::keeping(settings, 2).unwrap();
        let (url, accepted, open) = keeps_connections(Duration::from_millis(300)).await;
        let (hook, secrets) = hook_of(serde_json::json!({"name": "h", "url": url}));
        let send = || {
            let req =
                DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
            outbound.deliver_within(req, Duration::from_secs(5))
        };
        let (a, b, c) = tokio::join!(send(), send(), send());
        assert!([a, b, c].iter().all(|r| r.sent == Sent::Response { status: 200, retry_after: None }));
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "three requests at once, three connections");
        for _ in 0..100 {
            if open.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(open.load(Ordering::SeqCst), 2, "two kept open, the third closed");
        // The next two reuse the kept ones.
        let (a, b) = tokio::join!(send(), send());
        assert!([a, b].iter().all(|r| r.sent == Sent::Response { status: 200, retry_after: None }));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    fn oauth_hook(url: &str, token_url: &str) -> (Hook, HookSecrets) {
        hook_of(serde_json::json!({"name": "h", "url": url, "auth": {"type": "OAUTH_CLIENT_CREDENTIALS",
            "token_url": token_url, "client_id": "c", "client_secret": "s"}}))
    }

    /// A token endpoint slower than the attempt's budget (the fast lane's 2 s against a
    /// fetch's 10 s): the attempt times out without reaching the receiver (which the
    /// worker then does not take for slow), and the fetch goes on, so the next attempt has
    /// its token. It was thrown away with the attempt, and each attempt asked again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_fetch_slower_than_the_attempt_is_kept_for_the_next() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(
            hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600}"#)
                .after(Duration::from_millis(700)),
        );
        let receiver = hookbridge_testkit::Receiver::start().await;
        let (hook, secrets) = oauth_hook(&receiver.url("/"), &idp.url("/token"));
        let outbound = local_outbound();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let first = outbound.deliver_within(req, Duration::from_millis(200)).await;
        assert_eq!(first.attempt.error_class, Some(ErrorClass::Timeout), "{:?}", first.attempt);
        assert!(!first.reached, "the receiver was not asked");
        assert!(receiver.received().is_empty());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let second = outbound.deliver_within(req, Duration::from_millis(200)).await;
        assert_eq!(second.attempt.status_code, Some(200), "{:?}", second.attempt);
        assert_eq!(idp.received().len(), 1, "one fetch");
        assert_eq!(receiver.received()[0].header("authorization"), Some("Bearer t"));
    }

    /// A receiver that refuses every token (an audience it does not take, say): the first
    /// delivery fetches a new token after the `401` and tries it; the next ones, within the
    /// minute, get the `401` with the token they have. Each fetched anew and was refused
    /// again, spending the identity provider's rate and quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_refusing_every_token_costs_one_fetch_not_one_per_delivery() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.script([hookbridge_testkit::Reply::body(200, r#"{"access_token": "t1", "expires_in": 3600}"#)]);
        idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t2", "expires_in": 3600}"#));
        let receiver = hookbridge_testkit::Receiver::start().await;
        receiver.always(hookbridge_testkit::Reply::status(401));
        let (hook, secrets) = oauth_hook(&receiver.url("/"), &idp.url("/token"));
        let outbound = local_outbound();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        for _ in 0..5 {
            let report = outbound.deliver_within(req, Duration::from_secs(5)).await;
            assert_eq!(report.attempt.status_code, Some(401), "{:?}", report.attempt);
        }
        assert_eq!(idp.received().len(), 2, "the first token, and one more after its refusal");
        assert_eq!(receiver.received().len(), 6, "the first delivery tried both tokens, the rest one");
    }

    /// A receiver that refuses the cached token (`401`) while a new one takes longer than
    /// the attempt has left: the attempt ran out waiting for its token, which the worker
    /// records as `auth`. It was a `timeout` of a receiver that had answered, opening its
    /// circuit after five.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_after_a_401_that_outlasts_the_attempt_is_waiting_for_a_token() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.script([hookbridge_testkit::Reply::body(200, r#"{"access_token": "t1", "expires_in": 3600}"#)]);
        idp.always(
            hookbridge_testkit::Reply::body(200, r#"{"access_token": "t2", "expires_in": 3600}"#)
                .after(Duration::from_secs(5)),
        );
        let receiver = hookbridge_testkit::Receiver::start().await;
        receiver.always(hookbridge_testkit::Reply::status(401).after(Duration::from_millis(200)));
        let (hook, secrets) = oauth_hook(&receiver.url("/"), &idp.url("/token"));
        let outbound = local_outbound();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = outbound.deliver_within(req, Duration::from_secs(1)).await;
        assert_eq!(receiver.received().len(), 1, "the receiver answered the first token");
        assert!(report.reached);
        assert!(report.timed_out_waiting_for_its_token(), "{report:?}");
        assert_eq!(report.counted_as_tokenless().attempt.error_class, Some(ErrorClass::Auth));
        // A receiver that does not answer in time is still its own timeout.
        let quick_idp = hookbridge_testkit::Receiver::start().await;
        quick_idp.always(hookbridge_testkit::Reply::body(200, r#"{"access_token": "t", "expires_in": 3600}"#));
        let silent = hookbridge_testkit::Receiver::start().await;
        silent.always(hookbridge_testkit::Reply::status(200).after(Duration::from_secs(5)));
        let (hook, secrets) = oauth_hook(&silent.url("/"), &quick_idp.url("/token"));
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = outbound.deliver_within(req, Duration::from_millis(500)).await;
        assert_eq!(report.attempt.error_class, Some(ErrorClass::Timeout));
        assert!(!report.timed_out_waiting_for_its_token(), "{report:?}");
    }

    /// A token fetch that fails after every attempt waiting for it gave up is not
    /// remembered: no one was told of it, and it may be the doing of what stopped them (a
    /// Lambda frozen mid-fetch). The next attempt asks the endpoint again rather than
    /// failing at once on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_failure_no_one_waited_for_is_not_remembered() {
        let idp = hookbridge_testkit::Receiver::start().await;
        idp.always(hookbridge_testkit::Reply::body(500, "down").after(Duration::from_millis(400)));
        let receiver = hookbridge_testkit::Receiver::start().await;
        let (hook, secrets) = oauth_hook(&receiver.url("/"), &idp.url("/token"));
        let outbound = local_outbound();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let first = outbound.deliver_within(req, Duration::from_millis(100)).await;
        assert!(!first.reached);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(idp.received().len(), 1, "the first fetch ended");
        let second = outbound.deliver_within(req, Duration::from_secs(2)).await;
        assert_eq!(second.attempt.error_class, Some(ErrorClass::Auth), "{:?}", second.attempt);
        assert_eq!(idp.received().len(), 2, "asked again, not failed on a failure no one waited for");
    }

    /// A token URL at an address the deployment does not allow fails the attempt at once as
    /// `ssrf_blocked`, as a `url` there does; it was `auth`, tried again for a day.
    #[tokio::test]
    async fn a_token_url_at_an_address_not_allowed_is_ssrf_blocked() {
        let receiver = hookbridge_testkit::Receiver::start().await;
        let (hook, secrets) = oauth_hook(&receiver.url("/"), "http://127.0.0.2:9/token");
        let network = NetworkPolicy { allow_http: true, allowed_networks: vec!["127.0.0.1/32".parse().unwrap()] };
        let outbound = Outbound::new(crate::OutboundSettings { timeout: Duration::from_secs(10), network }).unwrap();
        let req = DeliveryRequest { hook: &hook, secrets: &secrets, delivery_id: DeliveryId::generate(), body: "{}" };
        let report = outbound.deliver_within(req, Duration::from_secs(2)).await;
        assert_eq!(report.attempt.error_class, Some(ErrorClass::SsrfBlocked), "{:?}", report.attempt);
        assert_eq!(classify(report.sent), Disposition::Permanent(ErrorClass::SsrfBlocked));
        assert!(receiver.received().is_empty());
    }
}
