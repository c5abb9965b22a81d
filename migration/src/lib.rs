//! Database migrations for the credits ledger, one file per step, for SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_ledger_tables;
mod m20261125_000002_add_stripe_payments;
mod m20261128_000003_create_stripe_disputes;
mod m20261128_000004_create_stripe_orphan_sessions;
mod m20261201_000005_create_client_sessions;
mod m20261201_000005_create_credit_lots_and_holds;
mod m20261205_000006_add_balance_generation;
mod m20261205_000007_inline_allocations;
mod m20261205_000008_index_open_lots_only;
mod m20261206_000009_rewrite_lots_in_place;
mod m20261206_000010_usage_and_attribution;
mod m20261206_000011_outgoing_webhooks;
mod m20261206_000012_auto_top_up;
mod m20261206_000013_fan_out_webhook_events;
mod m20261206_000014_top_up_refunds;
mod m20261206_000015_audit_log;
mod m20261207_000016_index_present_keys_only;
mod m20261207_000017_index_unfanned_events_only;

/// Every migration of the schema, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_ledger_tables::Migration),
            Box::new(m20261125_000002_add_stripe_payments::Migration),
            Box::new(m20261128_000003_create_stripe_disputes::Migration),
            Box::new(m20261128_000004_create_stripe_orphan_sessions::Migration),
            Box::new(m20261201_000005_create_client_sessions::Migration),
            Box::new(m20261201_000005_create_credit_lots_and_holds::Migration),
            Box::new(m20261205_000006_add_balance_generation::Migration),
            Box::new(m20261205_000007_inline_allocations::Migration),
            Box::new(m20261205_000008_index_open_lots_only::Migration),
            Box::new(m20261206_000009_rewrite_lots_in_place::Migration),
            Box::new(m20261206_000010_usage_and_attribution::Migration),
            Box::new(m20261206_000011_outgoing_webhooks::Migration),
            Box::new(m20261206_000012_auto_top_up::Migration),
            Box::new(m20261206_000013_fan_out_webhook_events::Migration),
            Box::new(m20261206_000014_top_up_refunds::Migration),
            Box::new(m20261206_000015_audit_log::Migration),
            Box::new(m20261207_000016_index_present_keys_only::Migration),
            Box::new(m20261207_000017_index_unfanned_events_only::Migration),
        ]
    }
}
