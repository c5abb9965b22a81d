//! `POST /webhooks/stripe`: verify the signature on the raw body, then apply the event.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::billing::webhook::{parse_event, verify_signature};
use crate::billing::{BillingError, EventOutcome};
use crate::ledger::{Audit, AuditActor, LedgerError};

/// Stripe's events are far smaller than this; anything bigger is not Stripe.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Verifies and applies one delivery. 2xx: applied, a duplicate, or ignored; 400: a bad
/// signature or body; 5xx: not applied, so Stripe retries.
pub async fn stripe(
    State(state): State<AppState>,
    peer: super::graphql::Peer,
    request_id: Option<axum::Extension<super::observe::RequestId>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.stripe_webhook_secret else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "webhooks are not configured (STRIPE_WEBHOOK_SECRET)");
    };
    let signature = headers.get("stripe-signature").and_then(|value| value.to_str().ok());
    let now = state.ledger.now().timestamp();
    if let Err(error) = verify_signature(signature, &body, secret.expose(), now) {
        tracing::warn!(%error, "Stripe webhook refused");
        crate::metrics::stripe_event("other", "rejected");
        return answer(StatusCode::BAD_REQUEST, &error.to_string());
    }
    let event = match parse_event(&body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "Stripe webhook body unparsable");
            crate::metrics::stripe_event("other", "rejected");
            return answer(StatusCode::BAD_REQUEST, "unparsable event");
        }
    };
    tracing::Span::current().record("operation", event.event_type.as_str());
    // What the event changes is audited as Stripe's, with this delivery's address and id.
    let ip = state.client_address.of(&headers, peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr));
    let billing = state.billing.acting_for(Audit {
        actor: AuditActor::Stripe,
        client_address: Some(ip.to_string()),
        request_id: request_id.map(|axum::Extension(id)| id.0.to_string()),
    });
    // Serialization failures and deadlocks are retried here; anything else Stripe retries.
    let applied = crate::ledger::retrying(|| billing.apply_event(&event)).await;
    let counted = match &applied {
        Ok(EventOutcome::Applied) => "applied",
        Ok(EventOutcome::Duplicate) => "duplicate",
        Ok(EventOutcome::Ignored) => "ignored",
        Err(BillingError::MalformedEvent { .. }) => "rejected",
        Err(_) => "failed",
    };
    crate::metrics::stripe_event(&event.event_type, counted);
    match applied {
        Ok(outcome) => {
            let outcome = match outcome {
                EventOutcome::Applied => "applied",
                EventOutcome::Duplicate => "duplicate",
                EventOutcome::Ignored => "ignored",
            };
            tracing::info!(event = %event.id, event_type = %event.event_type, outcome, "Stripe webhook");
            (StatusCode::OK, axum::Json(json!({ "received": true, "outcome": outcome }))).into_response()
        }
        Err(error @ BillingError::MalformedEvent { .. }) => {
            tracing::warn!(%error, "Stripe webhook event malformed");
            answer(StatusCode::BAD_REQUEST, "malformed event")
        }
        Err(error @ BillingError::Ledger(LedgerError::Unavailable(_) | LedgerError::Conflict(_))) => {
            tracing::error!(%error, event = %event.id, "Stripe webhook not applied: database unavailable; Stripe will retry");
            answer(StatusCode::SERVICE_UNAVAILABLE, "event not applied, retry later")
        }
        Err(error) => {
            tracing::error!(%error, event = %event.id, "Stripe webhook failed; Stripe will retry");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "event not applied, retry later")
        }
    }
}
