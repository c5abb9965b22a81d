//! Emptying a lot rewrites its row in place: no index covers what changes.
//!
//! The partial index `ix_credit_lots_open` (`WHERE remaining > 0`) made every lot a
//! consume emptied leave that index, so PostgreSQL could not update the row in place
//! (a heap-only tuple): each emptied lot was a new row version with new entries in every
//! index of the table. Now no index of `credit_lots` names `remaining`, `held` or
//! `status`, and its pages keep room for the new versions (`fillfactor` 50, PostgreSQL:
//! a page's lots can all be emptied in one transaction; pages written before this step
//! stay full until `VACUUM FULL credit_lots`, which an upgrade may run when convenient).
//!
//! The open lots are found instead from each balance's `open_lots_from`: the `seq` of its
//! oldest open lot, kept by the ledger under the organization's lock (lots only ever
//! empty, never refill, and a new lot's `seq` is above every earlier one), so the read is
//! a range of `ix_credit_lots_org_seq` starting at the oldest open lot. 0, the default,
//! reads every lot of the organization and is always correct; this step sets the exact
//! value.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each balance's oldest open lot, or past its latest change when none is open.
const SET_OPEN_LOTS_FROM: &str = "UPDATE credit_balances SET open_lots_from = COALESCE(\
     (SELECT MIN(l.seq) FROM credit_lots l WHERE l.organization_id = credit_balances.organization_id \
     AND l.remaining > 0), version + 1)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CreditBalances::Table)
                    .add_column(ColumnDef::new(CreditBalances::OpenLotsFrom).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(SET_OPEN_LOTS_FROM).await?;
        db.execute_unprepared("DROP INDEX ix_credit_lots_open").await?;
        if db.get_database_backend() == DbBackend::Postgres {
            // Room on each page for the row versions of lots being emptied.
            db.execute_unprepared("ALTER TABLE credit_lots SET (fillfactor = 50)").await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE credit_lots RESET (fillfactor)").await?;
        }
        db.execute_unprepared("CREATE INDEX ix_credit_lots_open ON credit_lots (organization_id) WHERE remaining > 0")
            .await?;
        manager
            .alter_table(
                Table::alter().table(CreditBalances::Table).drop_column(CreditBalances::OpenLotsFrom).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CreditBalances {
    Table,
    OpenLotsFrom,
}
