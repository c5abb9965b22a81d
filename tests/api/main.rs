//! One integration-test binary: every module drives the real server (or the ledger)
//! on SQLite and on a throw-away PostgreSQL.

mod helpers;

mod bad_input;
mod browser;
mod cli;
mod client_sessions;
mod fake_stripe;
mod graphql_api;
mod hardening;
mod http_spec;
mod ledger;
mod purchases;
mod races;
mod schema;
mod subscriptions;
mod ui;
mod ws_client;
