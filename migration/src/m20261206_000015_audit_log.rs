//! The audit log: one row per change of money or access made through the API, written
//! in the same transaction as the change. Append-only in the database itself: triggers
//! refuse every `UPDATE` and `DELETE` (and, on PostgreSQL, `TRUNCATE`) on both engines.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_TRIGGERS: [&str; 2] = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
];

const POSTGRES_TRIGGERS: [&str; 3] = [
    "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$",
    "CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events \
     FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events \
     FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(ColumnDef::new(AuditEvents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(AuditEvents::OrganizationId).string().null())
                    .col(ColumnDef::new(AuditEvents::ActorType).string().not_null())
                    .col(ColumnDef::new(AuditEvents::ActorId).string().null())
                    .col(ColumnDef::new(AuditEvents::Action).string().not_null())
                    .col(ColumnDef::new(AuditEvents::TargetId).string().null())
                    .col(ColumnDef::new(AuditEvents::Details).text().not_null())
                    .col(ColumnDef::new(AuditEvents::ClientAddress).string().null())
                    .col(ColumnDef::new(AuditEvents::RequestId).string().null())
                    .col(ColumnDef::new(AuditEvents::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("ix_audit_events_org_created", vec![AuditEvents::OrganizationId, AuditEvents::CreatedAt, AuditEvents::Id]),
            ("ix_audit_events_created", vec![AuditEvents::CreatedAt, AuditEvents::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(AuditEvents::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        let db = manager.get_connection();
        let triggers: &[&str] =
            if db.get_database_backend() == DbBackend::Postgres { &POSTGRES_TRIGGERS } else { &SQLITE_TRIGGERS };
        for statement in triggers {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuditEvents::Table).to_owned()).await?;
        if manager.get_connection().get_database_backend() == DbBackend::Postgres {
            manager.get_connection().execute_unprepared("DROP FUNCTION audit_events_append_only()").await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrganizationId,
    ActorType,
    ActorId,
    Action,
    TargetId,
    Details,
    ClientAddress,
    RequestId,
    CreatedAt,
}
