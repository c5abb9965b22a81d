//! A balance row's `generation`: raised by every write that changes the organization's
//! decided state (its balance, lots, holds or overdraft limit), under the row's lock. A
//! committer that kept an organization's state from its own last batch reuses it only
//! while the locked row still shows that generation, so a change by another replica (or
//! by any other writer) is always seen.

use sea_orm_migration::prelude::*;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CreditBalances::Table)
                    .add_column(ColumnDef::new(CreditBalances::Generation).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(CreditBalances::Table).drop_column(CreditBalances::Generation).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CreditBalances {
    Table,
    Generation,
}
