//! Orphan purchases: paid Checkout Sessions that match no organization or package. They
//! credit nothing, but the money was taken, so an operator must be able to find them.
//! A table of their own, since `credit_purchases.organization_id` is a required foreign key.

use sea_orm_migration::prelude::*;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StripeOrphanSessions::Table)
                    .col(ColumnDef::new(StripeOrphanSessions::CheckoutSessionId).string().not_null().primary_key())
                    .col(ColumnDef::new(StripeOrphanSessions::Status).string().not_null())
                    .col(ColumnDef::new(StripeOrphanSessions::Reason).string().not_null())
                    .col(ColumnDef::new(StripeOrphanSessions::Amount).big_integer().null())
                    .col(ColumnDef::new(StripeOrphanSessions::Currency).string().null())
                    .col(ColumnDef::new(StripeOrphanSessions::PaymentIntentId).string().null())
                    .col(ColumnDef::new(StripeOrphanSessions::ClientReferenceId).string().null())
                    // The session's metadata as JSON text: the same on both engines.
                    .col(ColumnDef::new(StripeOrphanSessions::Metadata).text().not_null())
                    .col(ColumnDef::new(StripeOrphanSessions::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(StripeOrphanSessions::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum StripeOrphanSessions {
    Table,
    CheckoutSessionId,
    Status,
    Reason,
    Amount,
    Currency,
    PaymentIntentId,
    ClientReferenceId,
    Metadata,
    CreatedAt,
}
