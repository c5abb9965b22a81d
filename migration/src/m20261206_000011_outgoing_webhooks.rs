//! Outgoing webhooks: endpoints an application registers, the events the ledger writes in
//! the same transaction as the change each describes (so an event exists if and only if
//! its change committed), and one delivery per event and matching endpoint, claimed by
//! a dispatcher with a lease so that no two replicas send the same attempt at once.
//!
//! Each balance row also carries its organization's low-balance threshold, kept with
//! the organizations' own column: the write path decides `credits.balance.low` from the
//! row it locks, with no other read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

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
                    .add_column(ColumnDef::new(CreditBalances::LowBalanceThreshold).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE credit_balances SET low_balance_threshold = (SELECT o.low_balance_threshold \
                 FROM organizations o WHERE o.id = credit_balances.organization_id)",
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(ColumnDef::new(WebhookEndpoints::Id).string().not_null().primary_key())
                    // Null: every organization's events (the admin's endpoints only).
                    .col(ColumnDef::new(WebhookEndpoints::OrganizationId).string().null())
                    .col(ColumnDef::new(WebhookEndpoints::Url).text().not_null())
                    // Comma-separated event types; empty: every type.
                    .col(ColumnDef::new(WebhookEndpoints::EventTypes).text().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::Description).text().null())
                    .col(ColumnDef::new(WebhookEndpoints::Enabled).boolean().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::DisabledReason).text().null())
                    .col(ColumnDef::new(WebhookEndpoints::Secret).text().not_null())
                    // The secret before the last rotation, signed with too until it lapses.
                    .col(ColumnDef::new(WebhookEndpoints::PreviousSecret).text().null())
                    .col(maybe_at(WebhookEndpoints::PreviousSecretUntil))
                    // When its deliveries began failing (cleared by a success).
                    .col(maybe_at(WebhookEndpoints::FailingSince))
                    .col(at(WebhookEndpoints::CreatedAt))
                    .col(at(WebhookEndpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_endpoints_org")
                    .table(WebhookEndpoints::Table)
                    .col(WebhookEndpoints::OrganizationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(ColumnDef::new(WebhookEvents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(WebhookEvents::OrganizationId).string().not_null())
                    .col(ColumnDef::new(WebhookEvents::Type).string().not_null())
                    .col(ColumnDef::new(WebhookEvents::Payload).text().not_null())
                    .col(at(WebhookEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_events_org_created")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::OrganizationId)
                    .col(WebhookEvents::CreatedAt)
                    .col(WebhookEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(ColumnDef::new(WebhookDeliveries::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(WebhookDeliveries::EndpointId).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::EventId).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Status).string().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Attempts).integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::LastStatusCode).integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::LastError).text().null())
                    .col(maybe_at(WebhookDeliveries::NextAttemptAt))
                    // A dispatcher's claim on the next attempt, until this instant.
                    .col(maybe_at(WebhookDeliveries::LeasedUntil))
                    .col(maybe_at(WebhookDeliveries::DeliveredAt))
                    .col(at(WebhookDeliveries::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_deliveries_endpoint")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::CreatedAt)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookDeliveries::Table.into_iden(),
            WebhookEvents::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter().table(CreditBalances::Table).drop_column(CreditBalances::LowBalanceThreshold).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CreditBalances {
    Table,
    LowBalanceThreshold,
}

fn at(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).timestamp_with_time_zone().not_null().to_owned()
}

fn maybe_at(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).timestamp_with_time_zone().null().to_owned()
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    OrganizationId,
    Url,
    EventTypes,
    Description,
    Enabled,
    DisabledReason,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    FailingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    OrganizationId,
    Type,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventId,
    Status,
    Attempts,
    LastStatusCode,
    LastError,
    NextAttemptAt,
    LeasedUntil,
    DeliveredAt,
    CreatedAt,
}
