//! Prometheus metrics: the families of the contract, their buckets, and the recorder.
//!
//! Recording goes through the `metrics` facade: counters and gauges are atomics,
//! histogram samples go to lock-free buckets drained by an upkeep task, so recording
//! takes no lock per request. The recorder is installed only when metrics are served
//! (`CREDITS_METRICS_TOKEN` or `CREDITS_METRICS_ADDR`); otherwise every record below is
//! the facade's no-op. Every family is registered at start-up (zero until used), and no
//! label carries an organization, a key or any other id: labels come from the fixed sets
//! below, never from a request's text.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::graphql::errors::code;

/// Requests per route and status.
pub const HTTP_REQUESTS: &str = "credits_http_requests_total";
/// Time to answer, per route.
pub const HTTP_DURATION: &str = "credits_http_request_duration_seconds";
/// GraphQL errors answered, per `extensions.code`.
pub const GRAPHQL_ERRORS: &str = "credits_graphql_errors_total";
/// Consume requests, per outcome.
pub const CONSUMPTIONS: &str = "credits_consumptions_total";
/// Requests per ledger commit.
pub const BATCH_SIZE: &str = ledger::metrics::BATCH_SIZE;
/// Time of one ledger commit.
pub const COMMIT_DURATION: &str = ledger::metrics::COMMIT_DURATION;
/// Database connections, per state (`idle`, `in_use`).
pub const DB_POOL: &str = "credits_db_pool_connections";
/// Open WebSockets.
pub const WEBSOCKETS: &str = "credits_websocket_connections";
/// Live subscriptions, per kind.
pub const SUBSCRIPTIONS: &str = "credits_subscriptions";
/// Requests refused by a rate limit.
pub const RATE_LIMITED: &str = "credits_rate_limited_total";
/// Stripe webhook events, per type and outcome.
pub const STRIPE_EVENTS: &str = "credits_stripe_events_total";
/// Outgoing webhook delivery attempts, per outcome.
pub const WEBHOOK_DELIVERIES: &str = "credits_webhook_deliveries_total";
/// Outgoing webhook deliveries waiting.
pub const WEBHOOK_QUEUE: &str = "credits_webhook_queue_depth";
/// Age of the oldest waiting outgoing webhook delivery.
pub const WEBHOOK_OLDEST: &str = "credits_webhook_oldest_pending_seconds";
/// Auto top-ups, per status reached (counted by the ledger's outbox after each commit).
pub const TOP_UPS: &str = ledger::metrics::TOP_UPS;

/// The routes requests are counted under; anything else is `other`.
pub const ROUTES: [&str; 11] = [
    "/graphql",
    "/graphql/ws",
    "/export/transactions",
    "/console",
    "/elements.js",
    "/assets",
    "/webhooks/stripe",
    "/healthz",
    "/readyz",
    "/metrics",
    "other",
];

/// How a consume request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Committed now.
    Succeeded,
    /// Answered from its idempotency key.
    Replayed,
    /// Refused: not enough credits.
    InsufficientCredits,
    /// Refused: its key was used for something else.
    Conflict,
    /// Anything else (bad input, database away).
    Failed,
}

impl ConsumeOutcome {
    const ALL: [Self; 5] = [Self::Succeeded, Self::Replayed, Self::InsufficientCredits, Self::Conflict, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Replayed => "replayed",
            Self::InsufficientCredits => "insufficient_credits",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
        }
    }
}

/// The Stripe event types the server acts on; others are counted as `other`.
const STRIPE_TYPES: [&str; 12] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "other",
];

/// How a Stripe webhook delivery ended: `applied`, `duplicate` (seen before), `ignored`
/// (not ours, or nothing to do), `rejected` (bad signature or body) or `failed` (ours:
/// Stripe retries).
pub const STRIPE_OUTCOMES: [&str; 5] = ["applied", "duplicate", "ignored", "rejected", "failed"];

/// How an outgoing webhook attempt ended: `succeeded` or `failed` (retried or given up).
pub const DELIVERY_OUTCOMES: [&str; 2] = ["succeeded", "failed"];

/// The statuses a top-up is counted at: started, then one of the three ends.
pub const TOP_UP_STATUSES: [&str; 4] = ["pending", "succeeded", "failed", "requires_action"];

/// The subscription kinds counted (the root fields of `Subscription`).
pub const SUBSCRIPTION_KINDS: [&str; 2] = ["creditBalanceChanged", "lowBalance"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (once per process) and registers every family; later calls
/// return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let commit = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &seconds)
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(COMMIT_DURATION.into()), &commit))
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &sizes))
                .and_then(PrometheusBuilder::install_recorder);
            let handle = match handle {
                Ok(handle) => handle,
                // Another recorder is installed already (an embedding program's): ours
                // then renders only what is recorded through it, which is nothing.
                Err(error) => {
                    tracing::warn!(%error, "metrics: cannot install the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            register();
            process().collect();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map(drop)
                .unwrap_or_else(|error| tracing::warn!(%error, "metrics: no upkeep thread"));
            handle
        })
        .clone()
}

/// Describes every family and creates each series a fixed label set allows, at zero.
fn register() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to answer an HTTP request, by route.");
    describe_counter!(GRAPHQL_ERRORS, "GraphQL errors answered, by extensions.code.");
    describe_counter!(CONSUMPTIONS, "consumeCredits requests, by outcome.");
    describe_histogram!(BATCH_SIZE, "Requests committed together in one ledger transaction.");
    describe_histogram!(COMMIT_DURATION, Unit::Seconds, "Time of one ledger batch, from lock to commit.");
    describe_gauge!(DB_POOL, "Database connections, by state.");
    describe_gauge!(WEBSOCKETS, "Open GraphQL WebSockets.");
    describe_gauge!(SUBSCRIPTIONS, "Live GraphQL subscriptions, by kind.");
    describe_counter!(RATE_LIMITED, "Requests and subscriptions refused by a rate limit.");
    describe_counter!(STRIPE_EVENTS, "Stripe webhook deliveries, by event type and outcome.");
    describe_counter!(WEBHOOK_DELIVERIES, "Outgoing webhook delivery attempts, by outcome.");
    describe_gauge!(WEBHOOK_QUEUE, "Outgoing webhook deliveries waiting to be sent.");
    describe_gauge!(WEBHOOK_OLDEST, Unit::Seconds, "Age of the oldest waiting outgoing webhook delivery.");
    describe_counter!(TOP_UPS, "Auto top-ups, by the status they reached.");
    for route in ROUTES {
        counter!(HTTP_REQUESTS, "route" => route, "status" => "200").absolute(0);
        let _ = histogram!(HTTP_DURATION, "route" => route);
    }
    for code in code::ALL {
        counter!(GRAPHQL_ERRORS, "code" => code).absolute(0);
    }
    for outcome in ConsumeOutcome::ALL {
        counter!(CONSUMPTIONS, "outcome" => outcome.label()).absolute(0);
    }
    let _ = histogram!(BATCH_SIZE);
    let _ = histogram!(COMMIT_DURATION);
    for state in ["idle", "in_use"] {
        gauge!(DB_POOL, "state" => state).set(0.0);
    }
    gauge!(WEBSOCKETS).set(0.0);
    for kind in SUBSCRIPTION_KINDS {
        gauge!(SUBSCRIPTIONS, "kind" => kind).set(0.0);
    }
    counter!(RATE_LIMITED).absolute(0);
    for event_type in STRIPE_TYPES {
        for outcome in STRIPE_OUTCOMES {
            counter!(STRIPE_EVENTS, "type" => event_type, "outcome" => outcome).absolute(0);
        }
    }
    for outcome in DELIVERY_OUTCOMES {
        counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).absolute(0);
    }
    gauge!(WEBHOOK_QUEUE).set(0.0);
    gauge!(WEBHOOK_OLDEST).set(0.0);
    for status in TOP_UP_STATUSES {
        counter!(TOP_UPS, "status" => status).absolute(0);
    }
}

/// The route a path is counted under.
pub fn route_of(path: &str) -> &'static str {
    if path.starts_with("/assets/") {
        return "/assets";
    }
    ROUTES.into_iter().find(|route| *route == path).unwrap_or("other")
}

/// One answered HTTP request.
pub fn http_request(route: &'static str, status: u16, elapsed: Duration) {
    let status = status_label(status);
    counter!(HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// A status code as a static label (the codes we answer; others by class).
fn status_label(status: u16) -> &'static str {
    const KNOWN: [(u16, &str); 18] = [
        (101, "101"),
        (200, "200"),
        (202, "202"),
        (204, "204"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (408, "408"),
        (413, "413"),
        (415, "415"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
    ];
    match KNOWN.iter().find(|(known, _)| *known == status) {
        Some((_, label)) => label,
        None => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// A GraphQL error answered with `code` (an unknown code counts as internal).
pub fn graphql_error(answered: &str) {
    let label = code::ALL.into_iter().find(|known| *known == answered).unwrap_or(code::INTERNAL_SERVER_ERROR);
    counter!(GRAPHQL_ERRORS, "code" => label).increment(1);
}

/// A consume request's outcome.
pub fn consumption(outcome: ConsumeOutcome) {
    counter!(CONSUMPTIONS, "outcome" => outcome.label()).increment(1);
}

/// A request or subscription refused by a rate limit.
pub fn rate_limited() {
    counter!(RATE_LIMITED).increment(1);
}

/// A Stripe webhook delivery of `event_type` that ended with `outcome` (one of
/// [`STRIPE_OUTCOMES`]).
pub fn stripe_event(event_type: &str, outcome: &'static str) {
    let label = STRIPE_TYPES.into_iter().find(|known| *known == event_type).unwrap_or("other");
    counter!(STRIPE_EVENTS, "type" => label, "outcome" => outcome).increment(1);
}

/// Outgoing webhook attempts that ended with `outcome` (one of [`DELIVERY_OUTCOMES`]).
pub fn webhook_deliveries(outcome: &'static str, attempts: u64) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(attempts);
}

/// One live subscription of a kind (one of [`SUBSCRIPTION_KINDS`]), counted until dropped.
pub struct LiveSubscription(&'static str);

impl LiveSubscription {
    /// Counts a subscription of `kind` from now.
    pub fn start(kind: &'static str) -> Self {
        gauge!(SUBSCRIPTIONS, "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for LiveSubscription {
    fn drop(&mut self) {
        gauge!(SUBSCRIPTIONS, "kind" => self.0).decrement(1.0);
    }
}

/// The values read when scraped rather than counted as they happen.
pub struct Snapshot {
    /// Idle and in-use database connections.
    pub pool: (u32, u32),
    /// Open WebSockets.
    pub websockets: usize,
    /// Waiting outgoing webhook deliveries, and the age of the oldest.
    pub webhook_backlog: (u64, Duration),
}

/// Renders every family in Prometheus text format 0.0.4, `snapshot` and the process's
/// own figures taken now.
pub fn render(handle: &PrometheusHandle, snapshot: &Snapshot) -> String {
    gauge!(DB_POOL, "state" => "idle").set(f64::from(snapshot.pool.0));
    gauge!(DB_POOL, "state" => "in_use").set(f64::from(snapshot.pool.1));
    gauge!(WEBSOCKETS).set(snapshot.websockets as f64);
    gauge!(WEBHOOK_QUEUE).set(snapshot.webhook_backlog.0 as f64);
    gauge!(WEBHOOK_OLDEST).set(snapshot.webhook_backlog.1.as_secs_f64());
    process().collect();
    handle.render()
}

/// The process collector (resident memory, CPU seconds, open file descriptors), described once.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_statuses_become_a_fixed_set_of_labels() {
        assert_eq!(route_of("/graphql"), "/graphql");
        assert_eq!(route_of("/assets/console.css"), "/assets");
        assert_eq!(route_of("/org_123/secret"), "other");
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
    }
}
