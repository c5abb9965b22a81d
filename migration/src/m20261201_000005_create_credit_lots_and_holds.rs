//! Credit lots, allocations, holds and the overdraft limit.
//!
//! Every credit that enters a balance forms a lot; every transaction records which lots
//! it changed (its allocations); holds reserve credits in lots. The database keeps its
//! own checks: a lot's `0 ≤ held ≤ remaining ≤ original`, and a balance's floor becomes
//! `−overdraft_limit` (it was 0). Existing organizations get one `PROMOTIONAL`,
//! non-expiring lot holding their current balance.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// PostgreSQL: the new columns and the new `CHECK`s (2^53 − 1 is the largest credit amount).
const POSTGRES_UP: &str = r#"
ALTER TABLE credit_balances ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held BETWEEN 0 AND 9007199254740991);
ALTER TABLE credit_balances ADD COLUMN overdraft_limit BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_limit BETWEEN 0 AND 9007199254740991);
ALTER TABLE credit_balances ADD COLUMN next_event_at TIMESTAMPTZ NULL;
ALTER TABLE credit_balances DROP CONSTRAINT credit_balances_balance_check;
ALTER TABLE credit_balances ADD CONSTRAINT credit_balances_balance_check CHECK (balance <= 9007199254740991 AND balance >= -overdraft_limit);
ALTER TABLE credit_transactions ADD COLUMN hold_id VARCHAR NULL;
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_balance_after_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_balance_after_check CHECK (balance_after BETWEEN -9007199254740991 AND 9007199254740991);
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN ('PURCHASE', 'CONSUMPTION', 'GRANT', 'REFUND', 'ADJUSTMENT', 'EXPIRY', 'VOID'));
"#;

const POSTGRES_DOWN: &str = r#"
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN ('PURCHASE', 'CONSUMPTION', 'GRANT', 'REFUND', 'ADJUSTMENT'));
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_balance_after_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_balance_after_check CHECK (balance_after BETWEEN 0 AND 9007199254740991);
ALTER TABLE credit_transactions DROP COLUMN hold_id;
ALTER TABLE credit_balances DROP CONSTRAINT credit_balances_balance_check;
ALTER TABLE credit_balances ADD CONSTRAINT credit_balances_balance_check CHECK (balance BETWEEN 0 AND 9007199254740991);
ALTER TABLE credit_balances DROP COLUMN next_event_at;
ALTER TABLE credit_balances DROP COLUMN overdraft_limit;
ALTER TABLE credit_balances DROP COLUMN held;
"#;

/// SQLite cannot alter a `CHECK`: these rewrite the table definitions (see
/// [`rebuild_sqlite`]); each pair is (old text, new text) of the `CREATE TABLE`.
const SQLITE_BALANCE_CHECK: (&str, &str) = (
    r#""balance" integer NOT NULL DEFAULT 0 CHECK ("balance" BETWEEN 0 AND 9007199254740991)"#,
    r#""balance" integer NOT NULL DEFAULT 0 CHECK ("balance" <= 9007199254740991), "held" integer NOT NULL DEFAULT 0 CHECK ("held" BETWEEN 0 AND 9007199254740991), "overdraft_limit" integer NOT NULL DEFAULT 0 CHECK ("overdraft_limit" BETWEEN 0 AND 9007199254740991) CHECK ("balance" >= -"overdraft_limit"), "next_event_at" timestamp_with_timezone_text NULL"#,
);
const SQLITE_KIND_CHECK: (&str, &str) =
    (r#"'GRANT', 'REFUND', 'ADJUSTMENT'))"#, r#"'GRANT', 'REFUND', 'ADJUSTMENT', 'EXPIRY', 'VOID'))"#);
const SQLITE_BALANCE_AFTER_CHECK: (&str, &str) = (
    r#"CHECK ("balance_after" BETWEEN 0 AND 9007199254740991)"#,
    r#"CHECK ("balance_after" BETWEEN -9007199254740991 AND 9007199254740991), "hold_id" varchar NULL"#,
);

const NEW_TABLES: &str = r#"
CREATE TABLE credit_lots (
    id VARCHAR NOT NULL PRIMARY KEY,
    organization_id VARCHAR NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    category VARCHAR NOT NULL CHECK (category IN ('PAID', 'PROMOTIONAL')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    original BIGINT NOT NULL CHECK (original BETWEEN 1 AND 9007199254740991),
    remaining BIGINT NOT NULL,
    held BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NULL,
    status VARCHAR NOT NULL CHECK (status IN ('ACTIVE', 'DEPLETED', 'EXPIRED', 'VOIDED')),
    source_transaction_id VARCHAR NOT NULL REFERENCES credit_transactions (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK (0 <= held AND held <= remaining AND remaining <= original)
);
CREATE INDEX ix_credit_lots_org_remaining ON credit_lots (organization_id, remaining);
CREATE INDEX ix_credit_lots_org_seq ON credit_lots (organization_id, seq);
CREATE INDEX ix_credit_lots_source ON credit_lots (source_transaction_id);
CREATE TABLE credit_allocations (
    transaction_id VARCHAR NOT NULL REFERENCES credit_transactions (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    organization_id VARCHAR NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (transaction_id, position)
);
CREATE INDEX ix_credit_allocations_lot ON credit_allocations (lot_id);
CREATE TABLE credit_holds (
    id VARCHAR NOT NULL PRIMARY KEY,
    organization_id VARCHAR NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount BETWEEN 1 AND 9007199254740991),
    captured BIGINT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED')),
    description TEXT NOT NULL,
    reference_type VARCHAR NULL,
    reference_id VARCHAR NULL,
    idempotency_key VARCHAR NULL,
    transaction_id VARCHAR NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX ux_credit_holds_org_idempotency_key ON credit_holds (organization_id, idempotency_key);
CREATE INDEX ix_credit_holds_org_status ON credit_holds (organization_id, status);
CREATE TABLE credit_hold_allocations (
    hold_id VARCHAR NOT NULL REFERENCES credit_holds (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, position)
);
CREATE INDEX ix_credit_balances_next_event ON credit_balances (next_event_at);
"#;

const DROP_NEW_TABLES: &str = r#"
DROP INDEX ix_credit_balances_next_event;
DROP TABLE credit_hold_allocations;
DROP TABLE credit_holds;
DROP TABLE credit_allocations;
DROP TABLE credit_lots;
"#;

/// One `PROMOTIONAL`, non-expiring lot per organization with a positive balance, holding
/// it; its source is the organization's latest transaction, and it predates every lot.
const MIGRATE_BALANCES: &str = r#"
INSERT INTO credit_lots (id, organization_id, category, priority, original, remaining, held, expires_at, status,
                         source_transaction_id, seq, created_at, updated_at)
SELECT 'lot_' || b.id, b.organization_id, 'PROMOTIONAL', 50, b.balance, b.balance, 0, NULL, 'ACTIVE',
       t.id, 0, b.updated_at, b.updated_at
FROM credit_balances b
JOIN credit_transactions t ON t.organization_id = b.organization_id AND t.seq = b.version
WHERE b.balance > 0
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                rebuild_sqlite(db, "credit_balances", &[SQLITE_BALANCE_CHECK]).await?;
                rebuild_sqlite(db, "credit_transactions", &[SQLITE_KIND_CHECK, SQLITE_BALANCE_AFTER_CHECK]).await?;
                run(db, &NEW_TABLES.replace("TIMESTAMPTZ", "timestamp_with_timezone_text")).await?;
            }
            _ => {
                run(db, POSTGRES_UP).await?;
                run(db, NEW_TABLES).await?;
            }
        }
        run(db, MIGRATE_BALANCES).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        run(db, DROP_NEW_TABLES).await?;
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                let reverse = |(old, new): (&'static str, &'static str)| (new, old);
                rebuild_sqlite(
                    db,
                    "credit_transactions",
                    &[reverse(SQLITE_KIND_CHECK), reverse(SQLITE_BALANCE_AFTER_CHECK)],
                )
                .await?;
                rebuild_sqlite(db, "credit_balances", &[reverse(SQLITE_BALANCE_CHECK)]).await
            }
            _ => run(db, POSTGRES_DOWN).await,
        }
    }
}

async fn run(db: &SchemaManagerConnection<'_>, script: &str) -> Result<(), DbErr> {
    for statement in script.split(';').map(str::trim).filter(|statement| !statement.is_empty()) {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// Rewrites a SQLite table's definition (its `CHECK`s, its columns) by the documented
/// way: the old table renamed aside, a new one made with the rewritten `CREATE TABLE`,
/// the rows copied, the old table dropped and the indexes recreated. Every replacement must match.
async fn rebuild_sqlite(
    pool: &SchemaManagerConnection<'_>,
    table: &str,
    replacements: &[(&str, &str)],
) -> Result<(), DbErr> {
    // One connection, one transaction: the steps must see each other's schema.
    let txn = pool.begin().await?;
    let db = &txn;
    let query = |sql: String| Statement::from_string(DbBackend::Sqlite, sql);
    let definition = db
        .query_one_raw(query(format!("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'")))
        .await?
        .ok_or_else(|| DbErr::Migration(format!("table {table} not found")))?
        .try_get::<String>("", "sql")?;
    let columns_before = db.query_all_raw(query(format!("PRAGMA table_info('{table}')"))).await?.len();
    let mut rewritten = definition.clone();
    for (old, new) in replacements {
        if !rewritten.contains(old) {
            return Err(DbErr::Migration(format!("{table}: expected {old} in {definition}")));
        }
        rewritten = rewritten.replacen(old, new, 1);
    }
    let indexes: Vec<String> = db
        .query_all_raw(query(format!(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND sql IS NOT NULL"
        )))
        .await?
        .into_iter()
        .map(|row| row.try_get::<String>("", "sql"))
        .collect::<Result<_, _>>()?;
    // The old table steps aside (its indexes go with it), the new one takes its name.
    let old = format!("{table}_before_rebuild");
    db.execute_unprepared(&format!("ALTER TABLE \"{table}\" RENAME TO \"{old}\"")).await?;
    db.execute_unprepared(&rewritten).await?;
    let names = |table: String| async move {
        db.query_all_raw(query(format!("PRAGMA table_info('{table}')")))
            .await?
            .into_iter()
            .map(|row| row.try_get::<String>("", "name"))
            .collect::<Result<Vec<_>, DbErr>>()
    };
    let new_columns = names(table.to_owned()).await?;
    // Columns added by the rewrite take their defaults; removed ones are dropped.
    let kept: Vec<String> = names(old.clone())
        .await?
        .into_iter()
        .filter(|column| new_columns.contains(column))
        .map(|column| format!("\"{column}\""))
        .collect();
    debug_assert!(columns_before >= kept.len());
    let list = kept.join(", ");
    db.execute_unprepared(&format!("INSERT INTO \"{table}\" ({list}) SELECT {list} FROM \"{old}\"")).await?;
    db.execute_unprepared(&format!("DROP TABLE \"{old}\"")).await?;
    for index in indexes {
        db.execute_unprepared(&index).await?;
    }
    txn.commit().await
}
