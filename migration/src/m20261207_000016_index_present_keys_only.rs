//! The idempotency-key and reference indexes of `credit_transactions` hold only the rows
//! that carry one.
//!
//! Both were over every transaction, so a consume sent without a key or a reference still
//! wrote an entry of NULLs into each: two index pages more for every such change, which
//! is what a batch over many organizations pays most for (each organization's entries
//! sit on pages of their own). Now they are partial. Every query that uses them compares
//! the indexed column with a value (`idempotency_key = ?`, `IN (…)`; `reference_type = ?`),
//! which implies it is not NULL, so both engines still choose them; uniqueness is
//! unchanged (NULL keys were never equal to one another), and the unique index keeps its
//! name, which the unique-violation mapping recognises.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, " WHERE idempotency_key IS NOT NULL", " WHERE reference_type IS NOT NULL").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace(manager, "", "").await
    }
}

/// Drops both indexes and creates them again with the given predicates. One call, so one
/// connection: on SQLite the migrator's statements otherwise go to any connection of the
/// pool, and one that has not yet seen the drop refuses the new index of the same name.
async fn replace(manager: &SchemaManager<'_>, keys: &str, references: &str) -> Result<(), DbErr> {
    let sql = format!(
        "DROP INDEX ux_credit_transactions_org_idempotency_key; \
         CREATE UNIQUE INDEX ux_credit_transactions_org_idempotency_key \
         ON credit_transactions (organization_id, idempotency_key){keys}; \
         DROP INDEX ix_credit_transactions_org_reference; \
         CREATE INDEX ix_credit_transactions_org_reference \
         ON credit_transactions (organization_id, reference_type, reference_id){references};"
    );
    manager.get_connection().execute_unprepared(&sql).await?;
    Ok(())
}
