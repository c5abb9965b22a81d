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

/// An owner of allocations (transactions, holds).
struct Owner {
    /// Its table.
    table: &'static str,
    /// The old table of its allocations.
    allocation_table: &'static str,
    /// That table's column naming the owner.
    key: &'static str,
    /// Whether that table also named the organization.
    names_organization: bool,
    /// The new column's definition.
    column: &'static str,
    /// The old table as it was created, with its index.
    create_allocation_table: &'static str,
}

const OWNERS: [Owner; 2] = [
    Owner {
        table: "credit_transactions",
        allocation_table: "credit_allocations",
        key: "transaction_id",
        names_organization: true,
        column: "TEXT NULL",
        create_allocation_table: r#"
CREATE TABLE credit_allocations (
    transaction_id VARCHAR NOT NULL REFERENCES credit_transactions (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    organization_id VARCHAR NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (transaction_id, position)
);
CREATE INDEX ix_credit_allocations_lot ON credit_allocations (lot_id)
"#,
    },
    Owner {
        table: "credit_holds",
        allocation_table: "credit_hold_allocations",
        key: "hold_id",
        names_organization: false,
        column: "TEXT NOT NULL DEFAULT '[]'",
        create_allocation_table: r#"
CREATE TABLE credit_hold_allocations (
    hold_id VARCHAR NOT NULL REFERENCES credit_holds (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    lot_id VARCHAR NULL REFERENCES credit_lots (id) ON DELETE CASCADE,
    amount BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, position)
)
"#,
    },
];

impl Owner {
    /// The statements that move the allocations into the owner's rows.
    fn inline(&self, backend: DbBackend) -> Vec<String> {
        let Self { table, allocation_table, key, column, .. } = self;
        let aggregate = match backend {
            DbBackend::Postgres => format!(
                "SELECT json_agg(json_build_object('lot', a.lot_id, 'amount', a.amount) ORDER BY a.position)::text \
                 FROM {allocation_table} a WHERE a.{key} = {table}.id"
            ),
            _ => format!(
                "SELECT json_group_array(json_object('lot', a.lot_id, 'amount', a.amount)) \
                 FROM (SELECT lot_id, amount FROM {allocation_table} WHERE {key} = {table}.id ORDER BY position) AS a"
            ),
        };
        vec![
            format!("ALTER TABLE {table} ADD COLUMN allocations {column}"),
            format!(
                "UPDATE {table} SET allocations = ({aggregate}) WHERE id IN (SELECT {key} FROM {allocation_table})"
            ),
            format!("DROP TABLE {allocation_table}"),
        ]
    }

    /// The statements that give the allocations their table back.
    fn expand(&self, backend: DbBackend) -> Vec<String> {
        let Self { table, allocation_table, key, create_allocation_table, names_organization, .. } = self;
        let (organization, organization_value) =
            if *names_organization { (", organization_id", ", o.organization_id") } else { ("", "") };
        let elements = match backend {
            DbBackend::Postgres => format!(
                "SELECT o.id, (e.n - 1)::int{organization_value}, e.value->>'lot', (e.value->>'amount')::bigint \
                 FROM {table} o, json_array_elements(o.allocations::json) WITH ORDINALITY AS e(value, n)"
            ),
            _ => format!(
                "SELECT o.id, CAST(e.key AS INTEGER){organization_value}, json_extract(e.value, '$.lot'), \
                 json_extract(e.value, '$.amount') FROM {table} o, json_each(o.allocations) e"
            ),
        };
        let mut statements: Vec<String> = create_allocation_table
            .split(';')
            .map(str::trim)
            .filter(|sql| !sql.is_empty())
            .map(str::to_owned)
            .collect();
        statements.push(format!(
            "INSERT INTO {allocation_table} ({key}, position{organization}, lot_id, amount) {elements} \
             WHERE o.allocations IS NOT NULL"
        ));
        statements.push(format!("ALTER TABLE {table} DROP COLUMN allocations"));
        statements
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for owner in &OWNERS {
            for statement in owner.inline(db.get_database_backend()) {
                db.execute_unprepared(&statement).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for owner in &OWNERS {
            for statement in owner.expand(db.get_database_backend()) {
                db.execute_unprepared(&statement).await?;
            }
        }
        Ok(())
    }
}
