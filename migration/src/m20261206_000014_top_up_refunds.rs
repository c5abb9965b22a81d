//! A top-up's charge can be refunded or disputed like a purchase's: its applied refund
//! is kept on the top-up (`refunded_amount`, as `credit_purchases` keeps its own), and a
//! refund or dispute finds its top-up by PaymentIntent.

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
                    .table(CreditTopUps::Table)
                    .add_column(ColumnDef::new(CreditTopUps::RefundedAmount).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_top_ups_payment_intent")
                    .table(CreditTopUps::Table)
                    .col(CreditTopUps::PaymentIntentId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_credit_top_ups_payment_intent").table(CreditTopUps::Table).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(CreditTopUps::Table).drop_column(CreditTopUps::RefundedAmount).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CreditTopUps {
    Table,
    RefundedAmount,
    PaymentIntentId,
}
