//! Stripe payments: processed webhook events, refunds as Stripe reports them, and the
//! purchase columns that link a purchase to its PaymentIntent and its refunds.

use sea_orm_migration::prelude::*;

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Each webhook event id is applied at most once: its row is inserted in the same
        // database transaction as its effect.
        manager
            .create_table(
                Table::create()
                    .table(StripeEvents::Table)
                    .col(ColumnDef::new(StripeEvents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(StripeEvents::EventType).string().not_null())
                    .col(ColumnDef::new(StripeEvents::ProcessedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // The latest cumulative refund Stripe reported per PaymentIntent, kept even when it
        // arrives before the payment it refunds, so arrival order does not matter.
        manager
            .create_table(
                Table::create()
                    .table(StripeRefunds::Table)
                    .col(ColumnDef::new(StripeRefunds::PaymentIntentId).string().not_null().primary_key())
                    .col(
                        ColumnDef::new(StripeRefunds::AmountRefunded)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(StripeRefunds::AmountRefunded).gte(0)),
                    )
                    .col(ColumnDef::new(StripeRefunds::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per statement.
        for column in [
            ColumnDef::new(CreditPurchases::PaymentIntentId).string().null().to_owned(),
            ColumnDef::new(CreditPurchases::RefundedAmount).big_integer().not_null().default(0).to_owned(),
            ColumnDef::new(CreditPurchases::RefundedCredits).big_integer().not_null().default(0).to_owned(),
        ] {
            manager.alter_table(Table::alter().table(CreditPurchases::Table).add_column(column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ux_credit_purchases_payment_intent")
                    .table(CreditPurchases::Table)
                    .col(CreditPurchases::PaymentIntentId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop().name("ux_credit_purchases_payment_intent").table(CreditPurchases::Table).to_owned(),
            )
            .await?;
        for column in
            [CreditPurchases::RefundedCredits, CreditPurchases::RefundedAmount, CreditPurchases::PaymentIntentId]
        {
            manager.alter_table(Table::alter().table(CreditPurchases::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(StripeRefunds::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(StripeEvents::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum StripeEvents {
    Table,
    Id,
    EventType,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum StripeRefunds {
    Table,
    PaymentIntentId,
    AmountRefunded,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CreditPurchases {
    Table,
    PaymentIntentId,
    RefundedAmount,
    RefundedCredits,
}
