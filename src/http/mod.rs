//! HTTP routes: GraphQL, GraphiQL, the transaction export, the console and elements,
//! embedded assets, health probes; with tracing, CORS, timeouts and limits.

pub mod assets;
pub mod auth;
mod export;
mod graphql;
mod health;
pub mod observe;
pub mod rate_limit;
pub mod server;
mod webhook;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::billing::Billing;
use crate::config::{Limits, Secret};
use crate::graphql::CreditsSchema;
use crate::ledger::Ledger;

/// What every handler shares: one allocation, so that handing it to a request (axum
/// clones the state for each) is one reference count, not a copy of every field.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    /// The state of an application made of `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The executable GraphQL schema.
    pub schema: CreditsSchema,
    /// The ledger (for authentication and health).
    pub ledger: Ledger,
    /// Purchases and webhook events.
    pub billing: Billing,
    /// The admin token, if configured.
    pub admin_token: Option<Secret>,
    /// The Stripe webhook signing secret, if configured.
    pub stripe_webhook_secret: Option<Secret>,
    /// Abuse limits.
    pub limits: Limits,
    /// Token buckets per caller.
    pub rate_limits: rate_limit::RateLimits,
    /// Where a request comes from (behind a proxy or not).
    pub client_address: rate_limit::ClientAddress,
    /// Open WebSockets per token.
    pub sockets: ws::SocketCounts,
    /// Browser pages and origins: GraphiQL on or off, CORS origins (CSP, WebSocket `Origin`).
    pub pages: assets::PagePolicy,
    /// Changes once when the server starts shutting down (WebSockets then close).
    pub shutdown: tokio::sync::watch::Receiver<()>,
    /// `/metrics`: the renderer (when metrics are on) and the token it asks for.
    pub metrics: observe::MetricsAccess,
}

/// `GET /console`: the page built from the elements, for one organization's token.
async fn console(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.pages.page(&headers, assets::console_html())
}

/// The application's routes over `state`.
pub fn router(state: AppState, cors_origins: &[String]) -> Router {
    let limits = state.limits;
    let mut router = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/export/transactions", get(export::transactions))
        .route("/console", get(console))
        .route("/elements.js", get(assets::elements))
        .route("/assets/{file}", get(assets::serve))
        .route("/webhooks/stripe", post(webhook::stripe).layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES)))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(observe::metrics))
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body_bytes));
    if !cors_origins.is_empty() {
        // `*` allows every origin (tower-http refuses a wildcard inside a list).
        let allow_origin = if cors_origins.iter().any(|origin| origin == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(cors_origins.iter().filter_map(|origin| origin.parse::<HeaderValue>().ok()))
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
                .max_age(Duration::from_secs(3600)),
        );
    }
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(Level::INFO)).make_span_with(
            |request: &Request<_>| {
                let span = tracing::info_span!(
                    "request",
                    otel.name = %format_args!("{} {}", request.method(), crate::metrics::route_of(request.uri().path())),
                    otel.kind = "server",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = request.extensions().get::<observe::RequestId>().map(|id| &*id.0),
                    operation = tracing::field::Empty,
                    organization = tracing::field::Empty,
                );
                // A child of the caller's trace, when spans are exported and it sent one.
                if let Some(parent) = crate::telemetry::parent_of(request.headers()) {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    let _ = span.set_parent(parent);
                }
                span
            },
        ))
        // Outermost: every answer, a timeout's too, carries the id and is counted.
        .layer(axum::middleware::from_fn(observe::observe))
}

/// The routes of `CREDITS_METRICS_ADDR`: `GET /metrics` without a token, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(observe::open_metrics)).with_state(state)
}
