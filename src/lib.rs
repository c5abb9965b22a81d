//! credits: a GraphQL server for credit-based usage billing.
//!
//! Organizations hold a credit balance; clients consume credits as customers use paid
//! features, operators grant them, and Stripe purchases add them (refunds and disputes
//! take them back). Every change is an immutable transaction, and no race can overdraw a
//! balance.
//!
//! # Layout
//! - [`ledger`] (the workspace crate `ledger/`, re-exported here): the domain over
//!   SeaORM; it does not depend on HTTP, GraphQL or Stripe. Its own `# Layout` maps it:
//!   `decide.rs` (the one pure decision step), `write/` ([`ledger::LedgerTx`]: decide
//!   under the lock, flush once, look-ups), `outbox.rs` (every hint, and the outgoing
//!   webhook events and their deliveries written in the same transaction), `commit/`
//!   (group commit, its operations, idempotency and retries), `read/` (history, lots,
//!   usage reports), `holds.rs`, `webhooks.rs` (endpoints, events, deliveries as stored),
//!   `events/` (live events as hints), `api_keys.rs`, `client_sessions.rs`, `db.rs`
//!   (connecting, how a write begins), `error.rs` ([`ledger::LedgerError`]).
//! - [`billing`]: packages, Stripe Checkout, the webhook state machine
//!   (`billing/payment_events.rs`, `billing/disputes.rs`), refunds and disputes as one
//!   rule (`billing/settlement.rs`); [`billing::BillingError`].
//! - [`graphql`]: the schema; resolvers are thin adapters over the ledger. One file per
//!   area holds its types and its part of the root `Query` / `Mutation` (merged in
//!   `graphql/mod.rs`): `ledger.rs` (organizations, balances, transactions), `lots.rs`,
//!   `holds.rs`, `billing.rs` (packages, purchases), `keys.rs` (API keys; client
//!   sessions in `client_sessions.rs`), `usage.rs` (`creditUsage`), `webhooks.rs`
//!   (endpoints, events, deliveries), `topups.rs` (auto top-up), `audit.rs`
//!   (`auditEvents`), `node.rs` (Relay `node`); subscriptions in `subscription.rs`.
//!   `context.rs`: the caller, where the request came from, and [`graphql::context::audited`],
//!   the ledger acting for them.
//!   [`graphql::limits`] measures every document (nesting, depth, cost, strings) before
//!   any database work; [`graphql::errors`] is the one mapping from every error
//!   ([`ledger::LedgerError`], [`billing::BillingError`], limits, rate limits) to its
//!   `extensions.code` and HTTP status, for HTTP and WebSocket alike.
//! - [`http`]: our accept loop with header and idle timeouts (`http/server.rs`),
//!   GraphQL-over-HTTP negotiation (`http/graphql.rs`), both WebSocket protocols
//!   (`http/ws.rs`), rate limits, authentication, the Stripe webhook, the transaction
//!   export (`http/export.rs`), health probes, request ids and `/metrics`
//!   (`http/observe.rs`), and
//!   the browser surface ([`http::assets`]: GraphiQL, `/console` and `/elements.js`, all
//!   embedded from `assets/` under content-hashed URLs with a strict CSP).
//! - [`webhooks`]: the dispatcher that delivers outgoing webhooks (claims under a lease,
//!   signs with Standard Webhooks, retries), and where they may go (`address.rs`).
//! - [`app`]: builds the application from [`config`] and serves it until shutdown.
//! - [`metrics`]: the Prometheus families, their buckets and the recorder.
//! - [`cli`]: the command line (serve, migrate, operator tasks, `backup`, `verify`);
//!   [`db`]: the ledger's connecting, plus migrating; [`telemetry`]: tracing.
//! - Outside this crate: `entity/` (SeaORM entities), `migration/` (one file per step),
//!   `tests/api/` (one integration binary), `examples/` (benchmarks).

// The merged GraphQL root types nest deeper than the compiler's default recursion limit
// allows when it proves their futures `Send`.
#![recursion_limit = "256"]

pub mod app;
pub mod billing;
pub mod cli;
pub mod config;
pub mod db;
pub mod graphql;
pub mod http;
pub mod metrics;
pub use ::ledger;
pub mod telemetry;
pub mod webhooks;

/// `mutex`, locked even when a panic elsewhere poisoned it: each of the server's mutexes
/// guards a table or queue (rate buckets, open sockets, waiting deliveries, a request's
/// null propagation) that stays usable whatever update was cut short.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
