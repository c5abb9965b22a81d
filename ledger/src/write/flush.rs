//! Writing what a [`LedgerTx`] decided, once, at commit: one multi-row `INSERT` of the
//! transactions (their allocations in their own rows), new lots and holds, one `UPDATE`
//! of the changed lots and one of the changed balances, each conditional on the version
//! and generation locked; and the row mappers they need.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{credit_hold, credit_lot, credit_transaction, credit_usage};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, QueryFilter, Statement,
};

use crate::decide::{self, HeldCredits, Standing};
use crate::events::Hint;
use crate::model::{allocations_json, slot_of};
use crate::{CreditLot, CreditTransaction, EventType, HoldStatus, LedgerError, TransactionKind, UsageTotals};
use serde_json::{Map, Value};

use super::{LedgerTx, open_lots_from};
use crate::commit::idempotency::duplicate_key_or;

impl LedgerTx {
    /// Writes what was decided: the transactions and their allocations, new and changed
    /// lots and holds, then each changed organization's new state, conditional on the
    /// version locked (so a write that bypassed the lock could never be overwritten
    /// silently).
    ///
    /// A taken idempotency key is [`LedgerError::DuplicateIdempotencyKey`]; the caller
    /// must then roll back.
    pub(super) async fn flush(&mut self) -> Result<(), LedgerError> {
        // A change that left `available` below an armed auto top-up threshold starts one.
        let triggered: Vec<String> = self
            .locked
            .iter()
            .filter(|(_, locked)| locked.top_up_below.is_some_and(|below| locked.state.available() < below))
            .map(|(organization_id, _)| organization_id.clone())
            .collect();
        for organization_id in triggered {
            if self.start_top_up(&organization_id).await?.is_some() {
                self.outbox.top_up_started();
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let rows: Vec<_> = pending.iter().map(transaction_row).collect();
        // Within SQLite's and PostgreSQL's bind-parameter limits (12 a row).
        for chunk in rows.chunks(2_000) {
            let inserted =
                credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(&self.txn).await;
            if let Err(error) = inserted {
                return Err(duplicate_key_or(error));
            }
        }
        self.add_usage(&pending).await?;
        self.raise_events(&pending);
        let at = self.at;
        let mut new_lots = Vec::new();
        let mut lot_updates = Vec::new();
        let mut resolved = Vec::new();
        let mut new_holds = Vec::new();
        let mut changed_orgs = Vec::new();
        for (organization_id, locked) in &mut self.locked {
            let state = &mut locked.state;
            let changed = !state.changed_lots.is_empty()
                || !state.created_holds.is_empty()
                || !state.resolved_holds.is_empty()
                || state.version != locked.row.version
                || state.overdraft_limit != locked.row.overdraft_limit
                || locked.threshold != locked.row.low_balance_threshold
                || locked.top_up_below != locked.row.auto_top_up_below;
            let (created, updated) = state.take_lot_changes();
            new_lots.extend(created.iter().map(|lot| lot_row(lot, at)));
            lot_updates.extend(updated);
            resolved.append(&mut state.resolved_holds);
            new_holds.append(&mut state.created_holds);
            if changed {
                changed_orgs.push(organization_id.clone());
            }
        }
        if !new_lots.is_empty() {
            for chunk in new_lots.chunks(1_000) {
                credit_lot::Entity::insert_many(chunk.to_vec()).exec_without_returning(&self.txn).await?;
            }
        }
        let backend = self.txn.get_database_backend();
        if !lot_updates.is_empty() {
            let updated = self.txn.execute_raw(update_lots(backend, &lot_updates, at)).await?;
            if updated.rows_affected() != lot_updates.len() as u64 {
                return Err(LedgerError::internal("a lot vanished under its lock"));
            }
        }
        self.write_holds(new_holds, resolved, &pending).await?;
        // Every changed balance in one statement, each conditional on the version it had
        // when locked (a write that bypassed the lock could never be overwritten silently:
        // then fewer rows match).
        for chunk in changed_orgs.chunks(500) {
            let rows = chunk.iter().filter_map(|organization_id| {
                let locked = self.locked.get(organization_id)?;
                let state = &locked.state;
                Some(vec![
                    (organization_id.clone().into(), "text"),
                    (state.balance.into(), "bigint"),
                    (state.version.into(), "bigint"),
                    (state.held.into(), "bigint"),
                    (state.overdraft_limit.into(), "bigint"),
                    (state.next_event().into(), "timestamptz"),
                    ((locked.row.generation + 1).into(), "bigint"),
                    (open_lots_from(state).into(), "bigint"),
                    (locked.threshold.into(), "bigint"),
                    (locked.top_up_below.into(), "bigint"),
                    (locked.row.version.into(), "bigint"),
                    (locked.row.generation.into(), "bigint"),
                ])
            });
            let statement = update_from_values(
                backend,
                "credit_balances",
                "organization_id",
                &[
                    "balance",
                    "version",
                    "held",
                    "overdraft_limit",
                    "next_event_at",
                    "generation",
                    "open_lots_from",
                    "low_balance_threshold",
                    "auto_top_up_below",
                ],
                at,
                "version = v.column11 AND credit_balances.generation = v.column12",
                rows,
            );
            let updated = self.txn.execute_raw(statement).await?;
            if updated.rows_affected() != chunk.len() as u64 {
                return Err(LedgerError::internal("a balance changed under its lock"));
            }
        }
        for organization_id in changed_orgs {
            let Some(locked) = self.locked.get_mut(&organization_id) else { continue };
            let state = &locked.state;
            let seq = state.version;
            let version_locked = locked.row.version;
            locked.row.balance = state.balance;
            locked.row.version = state.version;
            locked.row.held = state.held;
            locked.row.overdraft_limit = state.overdraft_limit;
            locked.row.next_event_at = state.next_event();
            locked.row.generation += 1;
            locked.row.open_lots_from = open_lots_from(state);
            locked.row.low_balance_threshold = locked.threshold;
            locked.row.auto_top_up_below = locked.top_up_below;
            locked.row.updated_at = at;
            let transactions = seq != version_locked;
            self.outbox.hint(if transactions {
                Hint::Changed { organization_id, seq }
            } else {
                Hint::Held { organization_id }
            });
        }
        Ok(())
    }

    /// Inserts created holds (with their allocations) and records resolved ones.
    async fn write_holds(
        &mut self,
        created: Vec<HeldCredits>,
        resolved: Vec<decide::Resolved>,
        pending: &[CreditTransaction],
    ) -> Result<(), LedgerError> {
        let mut rows: HashMap<String, credit_hold::Model> =
            std::mem::take(&mut self.pending_holds).into_iter().map(|row| (row.id.clone(), row)).collect();
        let mut hold_rows = Vec::new();
        for hold in &created {
            let row = rows.remove(&hold.id).ok_or_else(|| LedgerError::internal("hold without its request"))?;
            hold_rows.push(credit_hold::ActiveModel::from(row));
        }
        for chunk in hold_rows.chunks(1_000) {
            let inserted = credit_hold::Entity::insert_many(chunk.to_vec()).exec_without_returning(&self.txn).await;
            if let Err(error) = inserted {
                return Err(duplicate_key_or(error));
            }
        }
        for resolution in resolved {
            let transaction_id = pending
                .iter()
                .find(|transaction| transaction.hold_id.as_deref() == Some(resolution.id.as_str()))
                .map(|transaction| transaction.id.clone());
            let updated = credit_hold::Entity::update_many()
                .col_expr(credit_hold::Column::Status, Expr::value(resolution.status.as_str()))
                .col_expr(credit_hold::Column::Captured, Expr::value(resolution.captured))
                .col_expr(credit_hold::Column::TransactionId, Expr::value(transaction_id))
                .col_expr(credit_hold::Column::UpdatedAt, Expr::value(resolution.at))
                .filter(credit_hold::Column::Id.eq(&resolution.id))
                .filter(credit_hold::Column::Status.eq("ACTIVE"))
                .exec(&self.txn)
                .await?;
            if updated.rows_affected != 1 {
                return Err(LedgerError::internal("a hold resolved under its lock was not active"));
            }
        }
        Ok(())
    }
}

impl LedgerTx {
    /// Decides the outgoing events of this transaction, organization by organization,
    /// from the row it locked (where the organization stood before) and the state it
    /// leaves: the balance alerts ([`decide::alerts`]), a grant, an expiry or a void
    /// written, a hold expired, and what callers [raised](LedgerTx::raise). Each body
    /// carries the balance as this transaction commits it.
    fn raise_events(&mut self, pending: &[CreditTransaction]) {
        let Self { locked, outbox, at, .. } = self;
        // Each organization's transactions, found once (a batch may hold hundreds of both).
        let mut by_organization: HashMap<&str, Vec<&CreditTransaction>> = HashMap::new();
        for transaction in pending {
            by_organization.entry(transaction.organization_id.as_str()).or_default().push(transaction);
        }
        for (organization_id, locked) in locked.iter_mut() {
            let (row, state) = (&locked.row, &locked.state);
            let available = row.balance - row.held;
            let before = Standing {
                available,
                spendable: available + row.overdraft_limit,
                threshold: row.low_balance_threshold,
            };
            let after = Standing::of(state, locked.threshold);
            let own = by_organization.remove(organization_id.as_str()).unwrap_or_default();
            let last = own.last().map(|transaction| Value::from(transaction.id.clone()));
            let mut raised: Vec<(EventType, Map<String, Value>)> = decide::alerts(before, after)
                .into_iter()
                .map(|kind| {
                    let mut fields = Map::new();
                    fields.insert("threshold".into(), after.threshold.into());
                    if let Some(last) = &last {
                        fields.insert("transactionId".into(), last.clone());
                    }
                    (kind, fields)
                })
                .collect();
            for transaction in own {
                let kind = match transaction.kind {
                    TransactionKind::Grant => EventType::Granted,
                    TransactionKind::Expiry => EventType::Expired,
                    TransactionKind::Void => EventType::Voided,
                    _ => continue,
                };
                let mut fields = Map::new();
                fields.insert("transactionId".into(), transaction.id.clone().into());
                fields.insert("amount".into(), transaction.amount.into());
                if let Some(lot) = transaction.allocations.first().and_then(|allocation| allocation.lot_id.clone()) {
                    fields.insert("lotId".into(), lot.into());
                }
                raised.push((kind, fields));
            }
            for resolution in state.resolved_holds.iter().filter(|resolved| resolved.status == HoldStatus::Expired) {
                let mut fields = Map::new();
                fields.insert("holdId".into(), resolution.id.clone().into());
                fields.insert("status".into(), HoldStatus::Expired.as_str().into());
                raised.push((EventType::HoldExpired, fields));
            }
            raised.append(&mut locked.raised);
            for (kind, fields) in raised {
                let mut data = Map::new();
                data.insert("organizationId".into(), organization_id.clone().into());
                data.insert("version".into(), state.version.into());
                data.insert("balance".into(), state.balance.into());
                data.insert("available".into(), after.available.into());
                data.insert("held".into(), state.held.into());
                data.insert("spendable".into(), after.spendable.into());
                data.extend(fields);
                outbox.event(organization_id, kind, *at, data);
            }
        }
    }

    /// Adds `transactions` to the usage rollup, in this transaction: one upsert of their
    /// sums per organization, slot, reference type and key. Written here, beside the
    /// transactions it sums and nowhere else, the rollup cannot disagree with them.
    async fn add_usage(&self, transactions: &[CreditTransaction]) -> Result<(), LedgerError> {
        use credit_usage::Column;
        if transactions.is_empty() {
            return Ok(());
        }
        let mut sums: HashMap<(&str, DateTime<Utc>, &str, &str), UsageTotals> = HashMap::new();
        for transaction in transactions {
            let key = (
                transaction.organization_id.as_str(),
                slot_of(transaction.created_at),
                transaction.reference_type.as_deref().unwrap_or_default(),
                transaction.api_key_id.as_deref().unwrap_or_default(),
            );
            sums.entry(key).or_default().count(transaction.kind, transaction.amount);
        }
        let rows: Vec<_> = sums
            .into_iter()
            .map(|((organization_id, slot_start, reference_type, api_key_id), sums)| credit_usage::ActiveModel {
                organization_id: Set(organization_id.to_owned()),
                slot_start: Set(slot_start),
                reference_type: Set(reference_type.to_owned()),
                api_key_id: Set(api_key_id.to_owned()),
                consumed: Set(sums.consumed),
                added: Set(sums.added),
                expired: Set(sums.expired),
                refunded: Set(sums.refunded),
                transactions: Set(sums.transactions),
            })
            .collect();
        let sums = [Column::Consumed, Column::Added, Column::Expired, Column::Refunded, Column::Transactions];
        let mut upsert =
            OnConflict::columns([Column::OrganizationId, Column::SlotStart, Column::ReferenceType, Column::ApiKeyId]);
        for column in sums {
            let name = column.as_str();
            upsert.value(column, Expr::cust(format!("credit_usage.{name} + excluded.{name}")));
        }
        for chunk in rows.chunks(1_000) {
            credit_usage::Entity::insert_many(chunk.to_vec())
                .on_conflict(upsert.clone())
                .exec_without_returning(&self.txn)
                .await?;
        }
        Ok(())
    }
}

fn transaction_row(transaction: &CreditTransaction) -> credit_transaction::ActiveModel {
    credit_transaction::ActiveModel {
        id: Set(transaction.id.clone()),
        organization_id: Set(transaction.organization_id.clone()),
        seq: Set(transaction.seq),
        kind: Set(transaction.kind.as_str().to_owned()),
        amount: Set(transaction.amount),
        balance_after: Set(transaction.balance_after),
        description: Set(transaction.description.clone()),
        reference_type: Set(transaction.reference_type.clone()),
        reference_id: Set(transaction.reference_id.clone()),
        idempotency_key: Set(transaction.idempotency_key.clone()),
        hold_id: Set(transaction.hold_id.clone()),
        allocations: Set((!transaction.allocations.is_empty()).then(|| allocations_json(&transaction.allocations))),
        api_key_id: Set(transaction.api_key_id.clone()),
        client_session_id: Set(transaction.client_session_id.clone()),
        created_at: Set(transaction.created_at),
    }
}

pub(super) fn lot_row(lot: &CreditLot, at: DateTime<Utc>) -> credit_lot::ActiveModel {
    credit_lot::ActiveModel {
        id: Set(lot.id.clone()),
        organization_id: Set(lot.organization_id.clone()),
        category: Set(lot.category.as_str().to_owned()),
        priority: Set(lot.priority),
        original: Set(lot.original),
        remaining: Set(lot.remaining),
        held: Set(lot.held),
        expires_at: Set(lot.expires_at),
        status: Set(lot.status.as_str().to_owned()),
        source_transaction_id: Set(lot.source_transaction_id.clone()),
        seq: Set(lot.seq),
        created_at: Set(lot.created_at),
        updated_at: Set(at),
    }
}

/// `UPDATE credit_lots` of `lots` as decided: one statement whatever their number, the
/// rows passed as one JSON array (`[id, remaining, held, status]` each), so that each
/// engine prepares it once per connection and plans it once (a `VALUES` list is a new
/// statement for every count of rows, and PostgreSQL planned each one afresh).
fn update_lots(backend: DbBackend, lots: &[CreditLot], at: DateTime<Utc>) -> Statement {
    let rows: Vec<serde_json::Value> =
        lots.iter().map(|lot| serde_json::json!([lot.id, lot.remaining, lot.held, lot.status.as_str()])).collect();
    let rows = serde_json::Value::Array(rows).to_string();
    let sql = match backend {
        // The rows are found by primary key (`= ANY`), not by a join PostgreSQL might
        // plan as a scan of every lot.
        DbBackend::Postgres => {
            "UPDATE credit_lots SET remaining = (v.item ->> 1)::bigint, held = (v.item ->> 2)::bigint, \
             status = v.item ->> 3, updated_at = $1 FROM jsonb_array_elements($2::jsonb) AS v(item) \
             WHERE credit_lots.id = v.item ->> 0 \
             AND credit_lots.id = ANY (ARRAY(SELECT r ->> 0 FROM jsonb_array_elements($2::jsonb) AS r))"
        }
        _ => {
            "UPDATE credit_lots SET remaining = json_extract(v.value, '$[1]'), held = json_extract(v.value, '$[2]'), \
             status = json_extract(v.value, '$[3]'), updated_at = ? FROM json_each(?) AS v \
             WHERE credit_lots.id = json_extract(v.value, '$[0]')"
        }
    };
    Statement::from_sql_and_values(backend, sql, [at.into(), rows.into()])
}

/// `UPDATE table SET columns… = v.column2…, updated_at = at FROM (VALUES …) AS v WHERE
/// table.key = v.column1 AND table.key IN (…) AND table.<matches>`: many rows changed in
/// one statement, the same on both engines (`VALUES` columns are `column1`, `column2` …
/// on each). Each row's first value is its key. Each value carries its SQL type, which
/// PostgreSQL needs spelled out for parameters (a column of NULLs is no type).
///
/// The `IN` list repeats the keys so that PostgreSQL finds the rows by their index: with
/// the join alone it may hash the `VALUES` and scan the whole table, every batch (it did,
/// 17,000 lots deep, in the lots benchmark, when lots were updated this way).
fn update_from_values(
    backend: DbBackend,
    table: &str,
    key: &str,
    columns: &[&str],
    at: DateTime<Utc>,
    matches: &str,
    rows: impl Iterator<Item = Vec<(sea_orm::Value, &'static str)>>,
) -> Statement {
    let mut values: Vec<sea_orm::Value> = vec![at.into()];
    let placeholder = |values: &[sea_orm::Value], cast: &str| match backend {
        DbBackend::Postgres => format!("${}::{cast}", values.len()),
        _ => "?".to_owned(),
    };
    let at_placeholder = placeholder(&values, "timestamptz");
    let mut tuples = Vec::new();
    let mut keys = Vec::new();
    for row in rows {
        let mut cells = Vec::with_capacity(row.len());
        for (n, (value, cast)) in row.into_iter().enumerate() {
            if n == 0 {
                keys.push((value.clone(), cast));
            }
            values.push(value);
            cells.push(placeholder(&values, cast));
        }
        tuples.push(format!("({})", cells.join(", ")));
    }
    let mut key_cells = Vec::with_capacity(keys.len());
    for (value, cast) in keys {
        values.push(value);
        key_cells.push(placeholder(&values, cast));
    }
    let assignments: Vec<String> =
        columns.iter().enumerate().map(|(i, column)| format!("{column} = v.column{}", i + 2)).collect();
    let sql = format!(
        "UPDATE {table} SET {}, updated_at = {at_placeholder} FROM (VALUES {}) AS v \
         WHERE {table}.{key} = v.column1 AND {table}.{key} IN ({}) AND {table}.{matches}",
        assignments.join(", "),
        tuples.join(", "),
        key_cells.join(", ")
    );
    Statement::from_sql_and_values(backend, sql, values)
}
