//! One integration-test binary: every module drives the real server (or the ledger)
//! on SQLite and on a throw-away PostgreSQL.

mod helpers;
mod pg_cluster;

mod bad_input;
mod browser;
mod cli;
mod client_sessions;
mod crash;
mod fake_stripe;
mod fuzz_api;
mod graphql_api;
mod hardening;
mod holds;
mod http_spec;
mod ledger;
mod load;
mod lot_properties;
mod lots;
mod outage;
mod properties;
mod purchases;
mod races;
mod schema;
mod security;
mod shutdown;
mod subscriptions;
mod ui;
mod ws_client;
