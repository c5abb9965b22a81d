//! Organizations, their balances, the immutable transaction ledger, API keys and purchases.
//!
//! Invariants live in the schema too, not only in code: a balance is never negative nor
//! beyond 2^53 − 1 (the largest integer a JSON client can hold exactly), an idempotency key
//! is unique per organization, and each organization's transactions carry a unique,
//! gap-free sequence number equal to the balance row's version after that change.

use sea_orm_migration::prelude::*;

/// The largest credit amount a balance may hold: 2^53 − 1.
const MAX_CREDITS: i64 = 9_007_199_254_740_991;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(ColumnDef::new(Organizations::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Organizations::Name).string().not_null())
                    .col(
                        ColumnDef::new(Organizations::LowBalanceThreshold)
                            .big_integer()
                            .null()
                            .check(Expr::col(Organizations::LowBalanceThreshold).between(0, MAX_CREDITS)),
                    )
                    .col(ColumnDef::new(Organizations::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditBalances::Table)
                    .col(ColumnDef::new(CreditBalances::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(CreditBalances::OrganizationId).string().not_null().unique_key())
                    .col(
                        ColumnDef::new(CreditBalances::Balance)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(CreditBalances::Balance).between(0, MAX_CREDITS)),
                    )
                    .col(
                        ColumnDef::new(CreditBalances::Version)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(CreditBalances::Version).gte(0)),
                    )
                    .col(ColumnDef::new(CreditBalances::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditBalances::Table, CreditBalances::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditTransactions::Table)
                    .col(ColumnDef::new(CreditTransactions::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(CreditTransactions::OrganizationId).string().not_null())
                    .col(
                        ColumnDef::new(CreditTransactions::Seq)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(CreditTransactions::Seq).gt(0)),
                    )
                    .col(ColumnDef::new(CreditTransactions::Kind).string().not_null().check(
                        Expr::col(CreditTransactions::Kind).is_in([
                            "PURCHASE",
                            "CONSUMPTION",
                            "GRANT",
                            "REFUND",
                            "ADJUSTMENT",
                        ]),
                    ))
                    .col(
                        ColumnDef::new(CreditTransactions::Amount)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(CreditTransactions::Amount).ne(0)),
                    )
                    .col(
                        ColumnDef::new(CreditTransactions::BalanceAfter)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(CreditTransactions::BalanceAfter).between(0, MAX_CREDITS)),
                    )
                    .col(ColumnDef::new(CreditTransactions::Description).text().null())
                    .col(ColumnDef::new(CreditTransactions::ReferenceType).string().null())
                    .col(ColumnDef::new(CreditTransactions::ReferenceId).string().null())
                    .col(ColumnDef::new(CreditTransactions::IdempotencyKey).string().null())
                    .col(ColumnDef::new(CreditTransactions::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditTransactions::Table, CreditTransactions::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // Newest-first pages walk this index backwards; it also makes every sequence
        // number unique per organization, so two writers can never both record version N.
        manager
            .create_index(
                Index::create()
                    .name("ux_credit_transactions_org_seq")
                    .table(CreditTransactions::Table)
                    .col(CreditTransactions::OrganizationId)
                    .col(CreditTransactions::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // NULL keys are distinct on both engines, so only keyed operations are constrained.
        manager
            .create_index(
                Index::create()
                    .name("ux_credit_transactions_org_idempotency_key")
                    .table(CreditTransactions::Table)
                    .col(CreditTransactions::OrganizationId)
                    .col(CreditTransactions::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_transactions_org_reference")
                    .table(CreditTransactions::Table)
                    .col(CreditTransactions::OrganizationId)
                    .col(CreditTransactions::ReferenceType)
                    .col(CreditTransactions::ReferenceId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::OrganizationId).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string().not_null())
                    .col(ColumnDef::new(ApiKeys::SecretHash).string().not_null().unique_key())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ApiKeys::LastUsedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("ix_api_keys_org").table(ApiKeys::Table).col(ApiKeys::OrganizationId).to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(CreditPurchases::Table)
                    .col(ColumnDef::new(CreditPurchases::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(CreditPurchases::OrganizationId).string().not_null())
                    .col(ColumnDef::new(CreditPurchases::PackageId).string().not_null())
                    .col(ColumnDef::new(CreditPurchases::Status).string().not_null())
                    .col(
                        ColumnDef::new(CreditPurchases::Credits)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(CreditPurchases::Credits).gt(0)),
                    )
                    .col(
                        ColumnDef::new(CreditPurchases::Amount)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(CreditPurchases::Amount).gte(0)),
                    )
                    .col(ColumnDef::new(CreditPurchases::Currency).string().not_null())
                    .col(ColumnDef::new(CreditPurchases::CheckoutSessionId).string().not_null().unique_key())
                    .col(ColumnDef::new(CreditPurchases::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(CreditPurchases::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(CreditPurchases::Table, CreditPurchases::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_purchases_org_created")
                    .table(CreditPurchases::Table)
                    .col(CreditPurchases::OrganizationId)
                    .col(CreditPurchases::CreatedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CreditPurchases::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            CreditTransactions::Table.into_iden(),
            CreditBalances::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    LowBalanceThreshold,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CreditBalances {
    Table,
    Id,
    OrganizationId,
    Balance,
    Version,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CreditTransactions {
    Table,
    Id,
    OrganizationId,
    Seq,
    Kind,
    Amount,
    BalanceAfter,
    Description,
    ReferenceType,
    ReferenceId,
    IdempotencyKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrganizationId,
    Name,
    Prefix,
    SecretHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum CreditPurchases {
    Table,
    Id,
    OrganizationId,
    PackageId,
    Status,
    Credits,
    Amount,
    Currency,
    CheckoutSessionId,
    CreatedAt,
    UpdatedAt,
}
