//! One integration-test binary: every module drives the real server (or the ledger)
//! on SQLite and on a throw-away PostgreSQL.

mod support;
// The support modules answer to their short paths (`crate::helpers::…`) everywhere.
use support::{fake_stripe, helpers, pg_cluster, receiver, ws_client};

mod audit;
mod bad_input;
mod benchmarks;
mod browser;
mod cli;
mod client_sessions;
mod crash;
mod failover;
mod fuzz_api;
mod graphql_api;
mod hardening;
mod holds;
mod http_spec;
mod ledger;
mod load;
mod lot_properties;
mod lots;
mod operations;
mod outage;
mod properties;
mod purchases;
mod races;
mod schema;
mod security;
mod shutdown;
mod subscriptions;
mod topups;
mod ui;
mod usage;
mod webhooks;
