//! Outgoing webhook events are fanned out to endpoints by the dispatcher, not by the
//! write path: the change's transaction writes only the event (so it still exists if and
//! only if its change committed), marked `fanned_out = false`; a dispatcher then writes
//! one delivery per matching endpoint and marks it, in a transaction of its own, many
//! events at a time. Events written before this step already have their deliveries.

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
                    .table(WebhookEvents::Table)
                    .add_column(ColumnDef::new(WebhookEvents::FannedOut).boolean().not_null().default(true))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_events_fan_out")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::FannedOut)
                    .col(WebhookEvents::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_webhook_events_fan_out").table(WebhookEvents::Table).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(WebhookEvents::Table).drop_column(WebhookEvents::FannedOut).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    FannedOut,
    CreatedAt,
}
