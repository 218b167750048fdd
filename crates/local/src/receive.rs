//! `hookbridge receive`: a small receiver that prints each delivery and checks its
//! signature, for trying the platform out and for debugging an integration.

use anyhow::Context as _;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use hookbridge_core::secret::SigningSecret;
use hookbridge_core::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify_standard};

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Serves until Ctrl-C, answering the ownership challenge, and 200 to deliveries (`401` to
/// one whose signature does not check, when it has the secret).
pub async fn run(listen: SocketAddr, secret: Option<SigningSecret>) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen} (--listen)"))?;
    eprintln!("hookbridge receive: listening on http://{}/ (Ctrl-C stops)", listener.local_addr()?);
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let secret = secret.clone();
        async move {
            // The challenge is a `GET` without a `webhook-id`; a delivery carrying a header
            // of that name (a hook's own, whatever its method) is a delivery, checked like
            // any other.
            if method == Method::GET
                && !headers.contains_key(HEADER_ID)
                && let Some(challenge) = headers.get("x-uid-challenge").and_then(|v| v.to_str().ok())
            {
                println!("ownership challenge {method} {uri}: answering");
                return (StatusCode::OK, axum::Json(serde_json::json!({ "verification": challenge }))).into_response();
            }
            let id = header(&headers, HEADER_ID);
            // A delivery whose signature does not check is refused, as a real receiver would
            // refuse it: answered 200, the platform recorded it delivered, and a rotation
            // that broke the receiver's check went unseen.
            let (status, verdict) = match (&secret, header(&headers, HEADER_TIMESTAMP).parse::<i64>()) {
                (Some(s), Ok(ts)) => {
                    match verify_standard(
                        s,
                        id,
                        ts,
                        header(&headers, HEADER_SIGNATURE),
                        &body,
                        chrono::Utc::now().timestamp(),
                    ) {
                        Ok(()) => (StatusCode::OK, "signature valid".to_owned()),
                        Err(e) => (StatusCode::UNAUTHORIZED, format!("SIGNATURE INVALID: {e}")),
                    }
                }
                (Some(_), Err(_)) => (StatusCode::UNAUTHORIZED, "no webhook-timestamp".to_owned()),
                (None, _) => (
                    StatusCode::OK,
                    "signature not checked (set HOOKBRIDGE_RECEIVER_SECRET to the hook's secret)".to_owned(),
                ),
            };
            let (ts, sig) = (header(&headers, HEADER_TIMESTAMP), header(&headers, HEADER_SIGNATURE));
            println!(
                "{method} {uri}  webhook-id={id}  webhook-timestamp={ts}  webhook-signature={sig}  {verdict}\n{}\n",
                String::from_utf8_lossy(&body)
            );
            (status, axum::Json(serde_json::json!({}))).into_response()
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
