//! What every request carries and leaves behind: its id (`x-request-id`) and its
//! measurements, and `GET /metrics`.
//!
//! The id is the caller's when it sent a valid one (1 to 128 of `A-Z a-z 0-9 . _ -`),
//! else a new one; it goes into the request's extensions (for the GraphQL context, audit
//! rows and the request's span) and back on the response. tower-http's request-id
//! layers would keep an invalid caller id as it came, so this is a few lines of our own.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;

use super::AppState;
use super::auth::constant_time_eq;
use crate::config::Secret;

/// The header a request's id travels in, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Whether `id` is acceptable as a caller's request id.
fn valid(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

/// A new request id: 32 hex digits, time-ordered.
fn new_id() -> Arc<str> {
    uuid::Uuid::now_v7().simple().to_string().into()
}

/// Gives the request its id and counts it when answered.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(&REQUEST_ID).and_then(|value| value.to_str().ok()) {
        Some(sent) if valid(sent) => Arc::from(sent),
        _ => new_id(),
    };
    let route = crate::metrics::route_of(request.uri().path());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    crate::metrics::http_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// Where `/metrics` is served and to whom.
#[derive(Clone)]
pub struct MetricsAccess {
    /// The renderer; `None` when metrics are off.
    pub handle: Option<PrometheusHandle>,
    /// The bearer token the main address asks for (`CREDITS_METRICS_TOKEN`); `None`
    /// answers 404 there.
    pub token: Option<Secret>,
}

/// `GET /metrics` on the main address: with the metrics token only, else 404 (unset)
/// or 401.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (Some(handle), Some(token)) = (&state.metrics.handle, &state.metrics.token) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !sent.is_some_and(|sent| constant_time_eq(sent, token.expose())) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response();
    }
    scrape(&state, handle).await
}

/// `GET /metrics` on `CREDITS_METRICS_ADDR`: no token (that address is the operator's).
pub async fn open_metrics(State(state): State<AppState>) -> Response {
    match &state.metrics.handle {
        Some(handle) => scrape(&state, handle).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Renders every family, with the pool, WebSockets and webhook backlog read now.
async fn scrape(state: &AppState, handle: &PrometheusHandle) -> Response {
    let backlog = match state.ledger.webhook_backlog().await {
        Ok(backlog) => backlog,
        Err(error) => {
            tracing::warn!(%error, "metrics: cannot read the webhook backlog");
            (0, std::time::Duration::ZERO)
        }
    };
    let snapshot = crate::metrics::Snapshot {
        pool: state.ledger.pool_connections(),
        websockets: state.sockets.total(),
        webhook_backlog: backlog,
    };
    let body = crate::metrics::render(handle, &snapshot);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_1_to_128_safe_characters() {
        assert!(valid("req-1.2_3"));
        assert!(valid(&"a".repeat(128)));
        assert!(!valid(""));
        assert!(!valid(&"a".repeat(129)));
        assert!(!valid("a b"));
        assert!(!valid("a\u{e9}"));
        assert!(!valid("a/b"));
        assert!(valid(&new_id()));
    }
}
