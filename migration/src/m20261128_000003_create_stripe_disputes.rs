//! Disputed payments: one row per Stripe dispute, so that a withdrawal and its
//! reinstatement are each applied once, exactly, in whatever order they arrive.

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
                    .table(StripeDisputes::Table)
                    .col(ColumnDef::new(StripeDisputes::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(StripeDisputes::PaymentIntentId).string().not_null())
                    // Set once the withdrawal is applied to a purchase.
                    .col(ColumnDef::new(StripeDisputes::PurchaseId).string().null())
                    .col(
                        ColumnDef::new(StripeDisputes::Amount)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(StripeDisputes::Amount).gte(0)),
                    )
                    .col(ColumnDef::new(StripeDisputes::Currency).string().null())
                    .col(
                        ColumnDef::new(StripeDisputes::State)
                            .string()
                            .not_null()
                            .check(Expr::col(StripeDisputes::State).is_in(["PENDING", "WITHDRAWN", "REINSTATED"])),
                    )
                    .col(
                        ColumnDef::new(StripeDisputes::AccountedCredits)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(StripeDisputes::AccountedCredits).gte(0)),
                    )
                    .col(
                        ColumnDef::new(StripeDisputes::TakenCredits)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(StripeDisputes::TakenCredits).gte(0)),
                    )
                    .col(ColumnDef::new(StripeDisputes::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(StripeDisputes::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // A payment's events look up its disputes by PaymentIntent.
        manager
            .create_index(
                Index::create()
                    .name("ix_stripe_disputes_payment_intent")
                    .table(StripeDisputes::Table)
                    .col(StripeDisputes::PaymentIntentId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_stripe_disputes_payment_intent").table(StripeDisputes::Table).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(StripeDisputes::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum StripeDisputes {
    Table,
    Id,
    PaymentIntentId,
    PurchaseId,
    Amount,
    Currency,
    State,
    AccountedCredits,
    TakenCredits,
    CreatedAt,
    UpdatedAt,
}
