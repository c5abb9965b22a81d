//! Who made each transaction, and the usage rollup that answers reports.
//!
//! `credit_transactions` gains `api_key_id` and `client_session_id` (null for rows from
//! before this step, and for admin, Stripe and system entries), and an index on
//! `(organization_id, created_at, id)`: the export's order, and the edges of a report.
//!
//! `credit_usage` holds, per organization, 15-minute slot (UTC) and who-and-what (the
//! transactions' `reference_type` and `api_key_id`, `''` for none), the sums a report
//! adds up: credits consumed, added, expired and refunded, and how many transactions.
//! The ledger writes it in the same transaction as the transactions it sums (see the
//! ledger's `write/flush.rs`), so it never disagrees with them; a report over a million
//! transactions reads a few thousand rows instead of a million. Every time zone in use
//! today is offset from UTC by whole quarter hours, so a day or month in any of them is
//! a whole number of slots; where a boundary is not (a historic local mean time), the
//! report reads that one slot's transactions instead.
//!
//! This step fills the rollup from the transactions already written, with its own copy
//! of how a transaction counts (a migration is a frozen record of the schema's history:
//! it must not change when the ledger's code does).

use std::collections::HashMap;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::prelude::ChronoDateTimeUtc;
use sea_orm_migration::sea_orm::{ConnectionTrait, FromQueryResult, Statement};

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The width of a rollup slot, in seconds.
const SLOT_SECS: i64 = 900;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [CreditTransactions::ApiKeyId, CreditTransactions::ClientSessionId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(CreditTransactions::Table)
                        .add_column(ColumnDef::new(column).string())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_credit_transactions_org_created")
                    .table(CreditTransactions::Table)
                    .col(CreditTransactions::OrganizationId)
                    .col(CreditTransactions::CreatedAt)
                    .col(CreditTransactions::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CreditUsage::Table)
                    .col(ColumnDef::new(CreditUsage::OrganizationId).string().not_null())
                    .col(ColumnDef::new(CreditUsage::SlotStart).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(CreditUsage::ReferenceType).string().not_null())
                    .col(ColumnDef::new(CreditUsage::ApiKeyId).string().not_null())
                    .col(ColumnDef::new(CreditUsage::Consumed).big_integer().not_null())
                    .col(ColumnDef::new(CreditUsage::Added).big_integer().not_null())
                    .col(ColumnDef::new(CreditUsage::Expired).big_integer().not_null())
                    .col(ColumnDef::new(CreditUsage::Refunded).big_integer().not_null())
                    .col(ColumnDef::new(CreditUsage::Transactions).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(CreditUsage::OrganizationId)
                            .col(CreditUsage::SlotStart)
                            .col(CreditUsage::ReferenceType)
                            .col(CreditUsage::ApiKeyId),
                    )
                    .to_owned(),
            )
            .await?;
        backfill(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CreditUsage::Table).to_owned()).await?;
        manager
            .drop_index(
                Index::drop().name("ix_credit_transactions_org_created").table(CreditTransactions::Table).to_owned(),
            )
            .await?;
        for column in [CreditTransactions::ApiKeyId, CreditTransactions::ClientSessionId] {
            manager.alter_table(Table::alter().table(CreditTransactions::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(FromQueryResult)]
struct Row {
    organization_id: String,
    seq: i64,
    kind: String,
    amount: i64,
    reference_type: Option<String>,
    created_at: ChronoDateTimeUtc,
}

/// Sums the transactions already written into the rollup, a page at a time (memory
/// grows with the slots in use, not with the transactions).
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = db.get_database_backend();
    let mut sums: HashMap<(String, i64, String), [i64; 5]> = HashMap::new();
    let mut after: Option<(String, i64)> = None;
    loop {
        let mut select = Query::select()
            .columns([
                CreditTransactions::OrganizationId,
                CreditTransactions::Seq,
                CreditTransactions::Kind,
                CreditTransactions::Amount,
                CreditTransactions::ReferenceType,
                CreditTransactions::CreatedAt,
            ])
            .from(CreditTransactions::Table)
            .order_by(CreditTransactions::OrganizationId, Order::Asc)
            .order_by(CreditTransactions::Seq, Order::Asc)
            .limit(10_000)
            .to_owned();
        if let Some((organization_id, seq)) = &after {
            select.cond_where(
                Cond::any().add(Expr::col(CreditTransactions::OrganizationId).gt(organization_id.as_str())).add(
                    Cond::all()
                        .add(Expr::col(CreditTransactions::OrganizationId).eq(organization_id.as_str()))
                        .add(Expr::col(CreditTransactions::Seq).gt(*seq)),
                ),
            );
        }
        let rows = Row::find_by_statement(backend.build(&select)).all(db).await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.organization_id.clone(), last.seq));
        for row in rows {
            let slot = row.created_at.timestamp().div_euclid(SLOT_SECS) * SLOT_SECS;
            let key = (row.organization_id, slot, row.reference_type.unwrap_or_default());
            let sum = sums.entry(key).or_default();
            let column = match (row.kind.as_str(), row.amount) {
                ("CONSUMPTION", amount) => Some((0, -amount)),
                ("PURCHASE" | "GRANT", amount) => Some((1, amount)),
                ("ADJUSTMENT", amount) if amount > 0 => Some((1, amount)),
                ("EXPIRY" | "VOID", amount) => Some((2, -amount)),
                ("REFUND", amount) => Some((3, -amount)),
                _ => None,
            };
            if let Some((column, credits)) = column {
                sum[column] += credits;
            }
            sum[4] += 1;
        }
    }
    let rows: Vec<_> = sums.into_iter().collect();
    for chunk in rows.chunks(500) {
        let mut insert = Query::insert()
            .into_table(CreditUsage::Table)
            .columns([
                CreditUsage::OrganizationId,
                CreditUsage::SlotStart,
                CreditUsage::ReferenceType,
                CreditUsage::ApiKeyId,
                CreditUsage::Consumed,
                CreditUsage::Added,
                CreditUsage::Expired,
                CreditUsage::Refunded,
                CreditUsage::Transactions,
            ])
            .to_owned();
        for ((organization_id, slot, reference_type), [consumed, added, expired, refunded, transactions]) in chunk {
            let slot = ChronoDateTimeUtc::from_timestamp(*slot, 0).ok_or_else(|| DbErr::Custom("slot".into()))?;
            insert.values_panic([
                organization_id.as_str().into(),
                slot.into(),
                reference_type.as_str().into(),
                "".into(),
                (*consumed).into(),
                (*added).into(),
                (*expired).into(),
                (*refunded).into(),
                (*transactions).into(),
            ]);
        }
        let statement: Statement = backend.build(&insert);
        db.execute_raw(statement).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum CreditTransactions {
    Table,
    Id,
    OrganizationId,
    Seq,
    Kind,
    Amount,
    ReferenceType,
    CreatedAt,
    ApiKeyId,
    ClientSessionId,
}

#[derive(DeriveIden)]
enum CreditUsage {
    Table,
    OrganizationId,
    SlotStart,
    ReferenceType,
    ApiKeyId,
    Consumed,
    Added,
    Expired,
    Refunded,
    Transactions,
}
