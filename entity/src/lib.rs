//! SeaORM entities of the credits ledger: one module per table, and nothing else.
//!
//! The GraphQL layer never exposes these types directly; the ledger maps them to domain
//! types so the API and the tables can change independently.

pub mod api_key;
pub mod audit_event;
pub mod auto_top_up;
pub mod client_session;
pub mod credit_balance;
pub mod credit_hold;
pub mod credit_lot;
pub mod credit_purchase;
pub mod credit_top_up;
pub mod credit_transaction;
pub mod credit_usage;
pub mod organization;
pub mod stripe_dispute;
pub mod stripe_event;
pub mod stripe_orphan_session;
pub mod stripe_refund;
pub mod webhook_delivery;
pub mod webhook_endpoint;
pub mod webhook_event;
