//! One log line per request: method, route, status, duration, and what the handling
//! learned on the way (the caller's tenant; for a publish, how many events it published).
//! Never the body or headers, which may carry secrets.

use std::sync::{Arc, OnceLock};

use hookbridge_core::ids::TenantId;

/// What a request's handling notes for its log line. The middleware puts one in the
/// request's extensions; the caller's extractor and the handlers fill it in.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogNote(Arc<Noted>);

#[derive(Debug, Default)]
struct Noted {
    tenant: OnceLock<TenantId>,
    events: OnceLock<usize>,
}

impl LogNote {
    /// The caller's tenant, once it is known.
    pub(crate) fn tenant(&self, tenant: &TenantId) {
        let _ = self.0.tenant.set(tenant.clone());
    }

    /// How many events a publish published.
    pub(crate) fn events(&self, count: usize) {
        let _ = self.0.events.set(count);
    }
}

/// The request's line, at `info`, when it has been answered.
pub(crate) async fn log_request(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let note = LogNote::default();
    req.extensions_mut().insert(note.clone());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        route,
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_millis() as u64,
        tenant = note.0.tenant.get().map(tracing::field::display),
        events = note.0.events.get(),
        "request"
    );
    resp
}
