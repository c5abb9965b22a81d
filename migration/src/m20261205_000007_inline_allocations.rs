//! A transaction's allocations move into the transaction's own row, and a hold's into
//! the hold's, as a JSON array of `{"lot": "lot_…" | null, "amount": n}` in draw order
//! (null: the overdraft).
//!
//! They were tables of their own, one row per lot touched, each with foreign-key checks:
//! a consume spanning three lots wrote four rows instead of one, and on PostgreSQL those
//! rows cost as much as the transactions themselves. An allocation is never changed or
//! read without its transaction or hold, so it lives with it now: one row however many
//! lots it touched.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// This migration step.
#[derive(DeriveMigrationName)]
pub struct Migration;

const ADD: &str = "ALTER TABLE credit_transactions ADD COLUMN allocations TEXT NULL";
const ADD_TO_HOLDS: &str = "ALTER TABLE credit_holds ADD COLUMN allocations TEXT NOT NULL DEFAULT '[]'";

const COPY_SQLITE: &str = r#"
UPDATE credit_transactions SET allocations = (
    SELECT json_group_array(json_object('lot', a.lot_id, 'amount', a.amount))
    FROM (SELECT lot_id, amount FROM credit_allocations
          WHERE transaction_id = credit_transactions.id ORDER BY position) AS a
)
WHERE id IN (SELECT transaction_id FROM credit_allocations)
"#;

const COPY_POSTGRES: &str = r#"
UPDATE credit_transactions t SET allocations = (
    SELECT json_agg(json_build_object('lot', a.lot_id, 'amount', a.amount) ORDER BY a.position)::text
    FROM credit_allocations a WHERE a.transaction_id = t.id
)
WHERE t.id IN (SELECT transaction_id FROM credit_allocations)
"#;

const COPY_HOLDS_SQLITE: &str = r#"
UPDATE credit_holds SET allocations = (
    SELECT json_group_array(json_object('lot', a.lot_id, 'amount', a.amount))
    FROM (SELECT lot_id, amount FROM credit_hold_allocations
          WHERE hold_id = credit_holds.id ORDER BY position) AS a
)
WHERE id IN (SELECT hold_id FROM credit_hold_allocations)
"#;

const COPY_HOLDS_POSTGRES: &str = r#"
UPDATE credit_holds h SET allocations = (
    SELECT json_agg(json_build_object('lot', a.lot_id, 'amount', a.amount) ORDER BY a.position)::text
    FROM credit_hold_allocations a WHERE a.hold_id = h.id
)
WHERE h.id IN (SELECT hold_id FROM credit_hold_allocations)
"#;

const DROP_TABLE: &str = "DROP TABLE credit_allocations";
const DROP_HOLDS_TABLE: &str = "DROP TABLE credit_hold_allocations";

const CREATE_TABLE: &str = r#"
CREATE TABLE credit_allocations (
    transaction_id VARCHAR NOT NULL REFERENCES credit_transactions (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    organization_id VARCHAR NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (transaction_id, position)
)
"#;

const CREATE_HOLDS_TABLE: &str = r#"
CREATE TABLE credit_hold_allocations (
    hold_id VARCHAR NOT NULL REFERENCES credit_holds (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, position)
)
"#;

const INDEX: &str = "CREATE INDEX ix_credit_allocations_lot ON credit_allocations (lot_id)";

const EXPAND_SQLITE: &str = r#"
INSERT INTO credit_allocations (transaction_id, position, organization_id, lot_id, amount)
SELECT t.id, CAST(e.key AS INTEGER), t.organization_id, json_extract(e.value, '$.lot'), json_extract(e.value, '$.amount')
FROM credit_transactions t, json_each(t.allocations) e
WHERE t.allocations IS NOT NULL
"#;

const EXPAND_POSTGRES: &str = r#"
INSERT INTO credit_allocations (transaction_id, position, organization_id, lot_id, amount)
SELECT t.id, (e.n - 1)::int, t.organization_id, e.value->>'lot', (e.value->>'amount')::bigint
FROM credit_transactions t, json_array_elements(t.allocations::json) WITH ORDINALITY AS e(value, n)
WHERE t.allocations IS NOT NULL
"#;

const EXPAND_HOLDS_SQLITE: &str = r#"
INSERT INTO credit_hold_allocations (hold_id, position, lot_id, amount)
SELECT h.id, CAST(e.key AS INTEGER), json_extract(e.value, '$.lot'), json_extract(e.value, '$.amount')
FROM credit_holds h, json_each(h.allocations) e
"#;

const EXPAND_HOLDS_POSTGRES: &str = r#"
INSERT INTO credit_hold_allocations (hold_id, position, lot_id, amount)
SELECT h.id, (e.n - 1)::int, e.value->>'lot', (e.value->>'amount')::bigint
FROM credit_holds h, json_array_elements(h.allocations::json) WITH ORDINALITY AS e(value, n)
"#;

const DROP_COLUMN: &str = "ALTER TABLE credit_transactions DROP COLUMN allocations";
const DROP_HOLDS_COLUMN: &str = "ALTER TABLE credit_holds DROP COLUMN allocations";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (copy, copy_holds) = match db.get_database_backend() {
            DbBackend::Postgres => (COPY_POSTGRES, COPY_HOLDS_POSTGRES),
            _ => (COPY_SQLITE, COPY_HOLDS_SQLITE),
        };
        for statement in [ADD, copy, DROP_TABLE, ADD_TO_HOLDS, copy_holds, DROP_HOLDS_TABLE] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (expand, expand_holds) = match db.get_database_backend() {
            DbBackend::Postgres => (EXPAND_POSTGRES, EXPAND_HOLDS_POSTGRES),
            _ => (EXPAND_SQLITE, EXPAND_HOLDS_SQLITE),
        };
        for statement in [CREATE_TABLE, INDEX, expand, DROP_COLUMN, CREATE_HOLDS_TABLE, expand_holds, DROP_HOLDS_COLUMN]
        {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
