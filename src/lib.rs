//! credits: a GraphQL server for credit-based usage billing.
//!
//! Organizations hold a credit balance; clients consume credits as customers use paid
//! features, operators grant them, and Stripe purchases add them (refunds and disputes
//! take them back). Every change is an immutable transaction, and no race can overdraw a
//! balance.
//!
//! # Layout
//! - [`ledger`]: the domain, over SeaORM; knows nothing of GraphQL or HTTP.
//!   - `ledger/decide.rs`: the one decision step: what a change does to an
//!     organization's locked state (pure functions; lots and holds extend it).
//!   - `ledger/tx.rs`: [`ledger::LedgerTx`], one database transaction that locks
//!     organizations, decides changes, writes them once and announces them on commit.
//!   - `ledger/committer.rs`: group commit; concurrent consumes, grants and hold
//!     operations share one transaction, each caller getting its own answer.
//!   - `ledger/ops.rs`: what the committer decides (changes and hold operations, their
//!     requests and results); `ledger/holds.rs`: the hold operations, replays and reads;
//!     `ledger/lots.rs`: lot reads as of now, voids, the overdraft limit.
//!   - `ledger/events/`: live events as hints (wire format, hub, PostgreSQL `LISTEN`,
//!     SQLite revocation poll, the gap-free follower).
//!   - `ledger/api_keys.rs` (hashed keys, the in-memory cache of verified keys),
//!     `client_sessions.rs` (short-lived scoped browser tokens), `organizations.rs`,
//!     `history.rs`, `types.rs`, `error.rs` ([`ledger::LedgerError`]).
//! - [`billing`]: packages, Stripe Checkout, the webhook state machine
//!   (`billing/payment_events.rs`, `billing/disputes.rs`); [`billing::BillingError`].
//! - [`graphql`]: the schema; resolvers are thin adapters over the ledger. One file per
//!   area holds its types and its part of the root `Query` / `Mutation` (merged in
//!   `graphql/mod.rs`): `ledger.rs` (organizations, balances, transactions), `lots.rs`,
//!   `holds.rs`, `billing.rs` (packages, purchases), `keys.rs` (API keys; client
//!   sessions in `client_sessions.rs`), `node.rs` (Relay `node`); subscriptions in
//!   `subscription.rs`.
//!   [`graphql::limits`] measures every document (nesting, depth, cost, strings) before
//!   any database work; [`graphql::errors`] is the one mapping from every error
//!   ([`ledger::LedgerError`], [`billing::BillingError`], limits, rate limits) to its
//!   `extensions.code` and HTTP status, for HTTP and WebSocket alike.
//! - [`http`]: our accept loop with header and idle timeouts (`http/server.rs`),
//!   GraphQL-over-HTTP negotiation (`http/graphql.rs`), both WebSocket protocols
//!   (`http/ws.rs`), rate limits, authentication, the Stripe webhook, health probes, and
//!   the browser surface ([`http::assets`]: GraphiQL, `/console` and `/elements.js`, all
//!   embedded from `assets/` under content-hashed URLs with a strict CSP).
//! - [`app`]: builds the application from [`config`] and serves it until shutdown.
//! - [`cli`]: the command line; [`db`]: connecting (the committer's own SQLite
//!   connection too), migrating, the availability probe;
//!   [`telemetry`]: tracing.
//! - Outside this crate: `entity/` (SeaORM entities), `migration/` (one file per step),
//!   `tests/api/` (one integration binary), `examples/` (benchmarks).

pub mod app;
pub mod billing;
pub mod cli;
pub mod config;
pub mod db;
pub mod graphql;
pub mod http;
pub mod ledger;
pub mod telemetry;
