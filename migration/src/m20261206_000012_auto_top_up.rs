//! Auto top-up: an organization's settings (threshold, package, monthly limit, the saved
//! card's Stripe customer and payment method, why it is paused), its top-ups (one row per
//! recharge, written in the transaction of the change that triggered it), and on each
//! balance row the threshold below which a committed change starts one: set only while a
//! top-up may start, so the write path reads nothing more until one does.

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
                    .add_column(ColumnDef::new(CreditBalances::AutoTopUpBelow).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AutoTopUps::Table)
                    .col(ColumnDef::new(AutoTopUps::OrganizationId).string().not_null().primary_key())
                    .col(ColumnDef::new(AutoTopUps::Enabled).boolean().not_null())
                    .col(ColumnDef::new(AutoTopUps::Threshold).big_integer().null())
                    .col(ColumnDef::new(AutoTopUps::PackageId).string().null())
                    // The package's terms when it was chosen: what each top-up charges and adds.
                    .col(ColumnDef::new(AutoTopUps::PackageCredits).big_integer().null())
                    .col(ColumnDef::new(AutoTopUps::PackageAmount).big_integer().null())
                    .col(ColumnDef::new(AutoTopUps::PackageCurrency).string().null())
                    .col(ColumnDef::new(AutoTopUps::MonthlyLimit).integer().not_null())
                    .col(ColumnDef::new(AutoTopUps::PausedReason).text().null())
                    .col(ColumnDef::new(AutoTopUps::StripeCustomerId).string().null())
                    .col(ColumnDef::new(AutoTopUps::PaymentMethodId).string().null())
                    .col(ColumnDef::new(AutoTopUps::CardBrand).string().null())
                    .col(ColumnDef::new(AutoTopUps::CardLast4).string().null())
                    .col(ColumnDef::new(AutoTopUps::CardExpMonth).integer().null())
                    .col(ColumnDef::new(AutoTopUps::CardExpYear).integer().null())
                    .col(ColumnDef::new(AutoTopUps::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CreditTopUps::Table)
                    .col(ColumnDef::new(CreditTopUps::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(CreditTopUps::OrganizationId).string().not_null())
                    .col(ColumnDef::new(CreditTopUps::PackageId).string().not_null())
                    .col(ColumnDef::new(CreditTopUps::Status).string().not_null())
                    .col(ColumnDef::new(CreditTopUps::Credits).big_integer().not_null())
                    .col(ColumnDef::new(CreditTopUps::Amount).big_integer().not_null())
                    .col(ColumnDef::new(CreditTopUps::Currency).string().not_null())
                    .col(ColumnDef::new(CreditTopUps::PaymentIntentId).string().null())
                    .col(ColumnDef::new(CreditTopUps::FailureMessage).text().null())
                    .col(ColumnDef::new(CreditTopUps::TransactionId).string().null())
                    .col(ColumnDef::new(CreditTopUps::Attempts).integer().not_null())
                    .col(ColumnDef::new(CreditTopUps::NextAttemptAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(CreditTopUps::LeasedUntil).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(CreditTopUps::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(CreditTopUps::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_top_ups_org_created")
                    .table(CreditTopUps::Table)
                    .col(CreditTopUps::OrganizationId)
                    .col(CreditTopUps::CreatedAt)
                    .col(CreditTopUps::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_top_ups_due")
                    .table(CreditTopUps::Table)
                    .col(CreditTopUps::Status)
                    .col(CreditTopUps::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CreditTopUps::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AutoTopUps::Table).to_owned()).await?;
        manager
            .alter_table(
                Table::alter().table(CreditBalances::Table).drop_column(CreditBalances::AutoTopUpBelow).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CreditBalances {
    Table,
    AutoTopUpBelow,
}

#[derive(DeriveIden)]
enum AutoTopUps {
    Table,
    OrganizationId,
    Enabled,
    Threshold,
    PackageId,
    PackageCredits,
    PackageAmount,
    PackageCurrency,
    MonthlyLimit,
    PausedReason,
    StripeCustomerId,
    PaymentMethodId,
    CardBrand,
    CardLast4,
    CardExpMonth,
    CardExpYear,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CreditTopUps {
    Table,
    Id,
    OrganizationId,
    PackageId,
    Status,
    Credits,
    Amount,
    Currency,
    PaymentIntentId,
    FailureMessage,
    TransactionId,
    Attempts,
    NextAttemptAt,
    LeasedUntil,
    CreatedAt,
    UpdatedAt,
}
