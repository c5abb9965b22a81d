//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database answers and, on PostgreSQL, live events are being received.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.ledger.is_unavailable() || !crate::db::ping(state.ledger.db()).await {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    } else if !state.ledger.events_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "not yet listening for balance events")
    } else {
        (StatusCode::OK, "ready")
    }
}
