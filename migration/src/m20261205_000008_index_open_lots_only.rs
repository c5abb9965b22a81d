//! The index that finds an organization's open lots holds open lots only.
//!
//! It was `(organization_id, remaining)` over every lot ever made, so each lot a consume
//! emptied was written into it once more (at `remaining = 0`) and stayed there. Now it is
//! partial, `WHERE remaining > 0`: an emptied lot leaves it, the index stays as small as
//! the open lots, and emptying a lot writes one index entry fewer.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ix_credit_lots_org_remaining").await?;
        db.execute_unprepared("CREATE INDEX ix_credit_lots_open ON credit_lots (organization_id) WHERE remaining > 0")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ix_credit_lots_open").await?;
        db.execute_unprepared("CREATE INDEX ix_credit_lots_org_remaining ON credit_lots (organization_id, remaining)")
            .await?;
        Ok(())
    }
}
