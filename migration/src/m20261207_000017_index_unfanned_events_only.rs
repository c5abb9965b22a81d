//! The index the dispatcher finds events still to fan out by holds only those events.
//!
//! Since the write path writes each event's deliveries with it, every new event is
//! `fanned_out = true`; only events of an older version wait for the dispatcher. The index
//! over `(fanned_out, created_at)` still took an entry for every event (a page more for
//! each change that writes one), and PostgreSQL's generic plan for `fanned_out = $1` did
//! not use it: each sweep's look for a waiting event read the whole table (29 ms at 63,000
//! events, every second). Now it is partial, over `created_at` `WHERE NOT fanned_out`, and
//! the dispatcher's queries say `NOT fanned_out` as the index does, so both engines use it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One call, so one connection (see `m20261207_000016_index_present_keys_only`); on
        // SQLite not one transaction, so a step cut off half way is taken again whole.
        let sql = "DROP INDEX IF EXISTS ix_webhook_events_fan_out; \
                   CREATE INDEX IF NOT EXISTS ix_webhook_events_unfanned ON webhook_events (created_at) \
                   WHERE NOT fanned_out;";
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = "DROP INDEX IF EXISTS ix_webhook_events_unfanned; \
                   CREATE INDEX IF NOT EXISTS ix_webhook_events_fan_out ON webhook_events (fanned_out, created_at);";
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }
}
