//! Client sessions: short-lived, scoped bearer tokens that an application's backend mints
//! for its signed-in user, so a browser never holds a secret API key. Stored as a hash of
//! the token only, like API keys; revoked with their creating key.

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
                    .table(ClientSessions::Table)
                    .col(ColumnDef::new(ClientSessions::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(ClientSessions::OrganizationId).string().not_null())
                    // The API key that minted it (null for the admin token): revoking the
                    // key revokes its sessions.
                    .col(ColumnDef::new(ClientSessions::CreatedByKeyId).string().null())
                    .col(ColumnDef::new(ClientSessions::TokenHash).string().not_null().unique_key())
                    // Comma-separated scope names (`READ,PURCHASE`): the same on both engines.
                    .col(ColumnDef::new(ClientSessions::Scopes).string().not_null())
                    .col(ColumnDef::new(ClientSessions::ExpiresAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ClientSessions::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ClientSessions::RevokedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_client_sessions_org")
                            .from(ClientSessions::Table, ClientSessions::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_client_sessions_key")
                            .from(ClientSessions::Table, ClientSessions::CreatedByKeyId)
                            .to(ApiKeys::Table, ApiKeys::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_client_sessions_key")
                    .table(ClientSessions::Table)
                    .col(ClientSessions::CreatedByKeyId)
                    .to_owned(),
            )
            .await?;
        // The revocation poll (SQLite) asks for sessions revoked lately.
        manager
            .create_index(
                Index::create()
                    .name("ix_client_sessions_revoked")
                    .table(ClientSessions::Table)
                    .col(ClientSessions::RevokedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ClientSessions::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ClientSessions {
    Table,
    Id,
    OrganizationId,
    CreatedByKeyId,
    TokenHash,
    Scopes,
    ExpiresAt,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
}
