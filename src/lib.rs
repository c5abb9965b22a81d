//! credits: a GraphQL server for credit-based usage billing.
//!
//! Organizations hold a credit balance; clients consume credits as customers use paid
//! features, operators grant them, and (next) Stripe purchases add them. Every change is
//! an immutable transaction, and no race can overdraw a balance.
//!
//! # Layout
//! - [`ledger`]: the domain. Balances, transactions, idempotency, organizations, API
//!   keys and client sessions (short-lived browser tokens) over SeaORM; knows nothing of
//!   GraphQL or HTTP.
//! - [`billing`]: the credit-package catalogue and purchases.
//! - [`graphql`]: the schema; resolvers are thin adapters over the ledger, and
//!   [`graphql::errors`] is the one place domain errors become `extensions.code`.
//! - [`http`]: routes, GraphQL-over-HTTP negotiation, authentication, health probes, and
//!   the browser surface ([`http::assets`]: GraphiQL, `/console` and `/elements.js`, all
//!   embedded from `assets/` under content-hashed URLs with a strict CSP).
//! - [`app`]: builds the application from [`config`] and serves it until shutdown.
//! - [`cli`]: the command line; [`db`]: connecting and migrating; [`telemetry`]: tracing.

pub mod app;
pub mod billing;
pub mod cli;
pub mod config;
pub mod db;
pub mod graphql;
pub mod http;
pub mod ledger;
pub mod telemetry;
