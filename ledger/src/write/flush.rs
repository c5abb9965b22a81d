//! Writing what a [`LedgerTx`] decided, once, at commit: one `INSERT` of the transactions
//! (each carrying its allocations), new lots and holds, one `UPDATE` of the changed lots
//! and one of the changed balances, each conditional on the version and generation
//! locked, and one upsert of the usage rollup; the batch-sized ones take their rows as
//! one JSON array ([`JsonRows`]), so their text is the same for any batch.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::credit_hold;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement};

use crate::decide::{self, HeldCredits, Standing};
use crate::events::Hint;
use crate::model::{allocations_json, slot_of};
use crate::{CreditLot, CreditTransaction, EventType, HoldStatus, LedgerError, TransactionKind, UsageTotals};
use serde_json::{Map, Value};

use super::{Expect, LedgerTx, Writes};
use crate::commit::idempotency::duplicate_key_or;
use crate::db::{JsonRows, sql_time};

impl LedgerTx {
    /// Writes what was decided: the transactions and their allocations, new and changed
    /// lots and holds, then each changed organization's new state, conditional on the
    /// version locked (so a write that bypassed the lock could never be overwritten
    /// silently). All but the holds are returned held, for the outbox to send with its
    /// own at once ([`Writes`]: one statement on PostgreSQL, one text on SQLite).
    ///
    /// A taken idempotency key is [`LedgerError::DuplicateIdempotencyKey`]; the caller
    /// must then roll back.
    pub(super) async fn flush(&mut self) -> Result<Writes, LedgerError> {
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
        let backend = self.txn.get_database_backend();
        let mut writes = Writes::new(backend);
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            writes.push(&self.txn, insert_transactions(backend, &pending), Expect::Any).await?;
            writes.push(&self.txn, usage(backend, &pending), Expect::Any).await?;
        }
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
            // Their two arms of one statement may not share a lot ([`Writes`]).
            debug_assert!(updated.iter().all(|lot| created.iter().all(|new| new.id != lot.id)));
            new_lots.extend(created.iter().map(|lot| lot_values(lot, at)));
            lot_updates.extend(updated);
            resolved.append(&mut state.resolved_holds);
            new_holds.append(&mut state.created_holds);
            if changed {
                changed_orgs.push(organization_id.clone());
            }
        }
        if !new_lots.is_empty() {
            writes
                .push(&self.txn, JsonRows::new(backend).insert("credit_lots", LOT_COLUMNS, new_lots), Expect::Any)
                .await?;
        }
        if !lot_updates.is_empty() {
            let expect = Expect::Rows(lot_updates.len() as u64, "a lot vanished under its lock");
            writes.push(&self.txn, update_lots(backend, &lot_updates, at), expect).await?;
        }
        // Holds are written at once, each resolution seeing the holds created before it.
        self.write_holds(new_holds, resolved, &pending).await?;
        // Every changed balance in one statement, each conditional on the version it had
        // when locked (a write that bypassed the lock could never be overwritten silently:
        // then fewer rows match).
        if !changed_orgs.is_empty() {
            let rows: Vec<Value> = changed_orgs
                .iter()
                .filter_map(|organization_id| {
                    let locked = self.locked.get(organization_id)?;
                    let state = &locked.state;
                    Some(serde_json::json!([
                        organization_id,
                        state.balance,
                        state.version,
                        state.held,
                        state.overdraft_limit,
                        state.next_event().map(sql_time),
                        locked.row.generation + 1,
                        state.open_lots_from(),
                        locked.threshold,
                        locked.top_up_below,
                        locked.row.version,
                        locked.row.generation,
                    ]))
                })
                .collect();
            let expect = Expect::Rows(changed_orgs.len() as u64, "a balance changed under its lock");
            writes.push(&self.txn, update_balances(backend, rows, at), expect).await?;
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
            locked.row.open_lots_from = state.open_lots_from();
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
        Ok(writes)
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
}

/// The statement adding `transactions` to the usage rollup, in their transaction: one
/// upsert of their sums per organization, slot, reference type and key. Written with the
/// transactions it sums and nowhere else, the rollup cannot disagree with them.
fn usage(backend: DbBackend, transactions: &[CreditTransaction]) -> Statement {
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
    let values: Vec<Value> = sums
        .into_iter()
        .map(|((organization_id, slot_start, reference_type, api_key_id), sums)| {
            serde_json::json!([
                organization_id,
                sql_time(slot_start),
                reference_type,
                api_key_id,
                sums.consumed,
                sums.added,
                sums.expired,
                sums.refunded,
                sums.transactions,
            ])
        })
        .collect();
    let rows = JsonRows::new(backend);
    let sums = ["consumed", "added", "expired", "refunded", "transactions"];
    let sql = format!(
        "INSERT INTO credit_usage (organization_id, slot_start, reference_type, api_key_id, {}) \
             SELECT {} FROM {} WHERE true \
             ON CONFLICT (organization_id, slot_start, reference_type, api_key_id) DO UPDATE SET {}",
        sums.join(", "),
        rows.columns(&["text", "timestamptz", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint"]),
        rows.source(1),
        sums.map(|name| format!("{name} = credit_usage.{name} + excluded.{name}")).join(", "),
    );
    let values = Value::Array(values).to_string();
    Statement::from_sql_and_values(backend, sql, [values.into()])
}

/// The columns of a new lot's row, as [`lot_values`] gives them.
const LOT_COLUMNS: &[(&str, &str)] = &[
    ("id", "text"),
    ("organization_id", "text"),
    ("category", "text"),
    ("priority", "integer"),
    ("original", "bigint"),
    ("remaining", "bigint"),
    ("held", "bigint"),
    ("expires_at", "timestamptz"),
    ("status", "text"),
    ("source_transaction_id", "text"),
    ("seq", "bigint"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
];

/// A new lot's row ([`LOT_COLUMNS`]), written at `at`.
fn lot_values(lot: &CreditLot, at: DateTime<Utc>) -> Value {
    serde_json::json!([
        lot.id,
        lot.organization_id,
        lot.category.as_str(),
        lot.priority,
        lot.original,
        lot.remaining,
        lot.held,
        lot.expires_at.map(sql_time),
        lot.status.as_str(),
        lot.source_transaction_id,
        lot.seq,
        sql_time(lot.created_at),
        sql_time(at),
    ])
}

/// `UPDATE credit_lots` of `lots` as decided, each row `[id, remaining, held, status]`:
/// one statement whatever their number ([`JsonRows`]).
fn update_lots(backend: DbBackend, lots: &[CreditLot], at: DateTime<Utc>) -> Statement {
    let rows: Vec<Value> =
        lots.iter().map(|lot| serde_json::json!([lot.id, lot.remaining, lot.held, lot.status.as_str()])).collect();
    let json = JsonRows::new(backend);
    let at_placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
    let sql = format!(
        "UPDATE credit_lots SET remaining = {}, held = {}, status = {}, updated_at = {at_placeholder} FROM {} \
         WHERE credit_lots.id = {}{}",
        json.column(1, "bigint"),
        json.column(2, "bigint"),
        json.column(3, "text"),
        json.source(2),
        json.column(0, "text"),
        json.found_by("credit_lots.id", 2),
    );
    Statement::from_sql_and_values(backend, sql, [at.into(), Value::Array(rows).to_string().into()])
}

/// `INSERT` of the batch's transactions, each carrying its allocations: one statement.
fn insert_transactions(backend: DbBackend, transactions: &[CreditTransaction]) -> Statement {
    let rows = transactions
        .iter()
        .map(|transaction| {
            serde_json::json!([
                transaction.id,
                transaction.organization_id,
                transaction.seq,
                transaction.kind.as_str(),
                transaction.amount,
                transaction.balance_after,
                transaction.description,
                transaction.reference_type,
                transaction.reference_id,
                transaction.idempotency_key,
                transaction.hold_id,
                (!transaction.allocations.is_empty()).then(|| allocations_json(&transaction.allocations)),
                transaction.api_key_id,
                transaction.client_session_id,
                sql_time(transaction.created_at),
            ])
        })
        .collect();
    JsonRows::new(backend).insert("credit_transactions", TRANSACTION_COLUMNS, rows)
}

/// The columns of a transaction's row, as [`insert_transactions`] gives them.
const TRANSACTION_COLUMNS: &[(&str, &str)] = &[
    ("id", "text"),
    ("organization_id", "text"),
    ("seq", "bigint"),
    ("kind", "text"),
    ("amount", "bigint"),
    ("balance_after", "bigint"),
    ("description", "text"),
    ("reference_type", "text"),
    ("reference_id", "text"),
    ("idempotency_key", "text"),
    ("hold_id", "text"),
    ("allocations", "text"),
    ("api_key_id", "text"),
    ("client_session_id", "text"),
    ("created_at", "timestamptz"),
];

/// `UPDATE credit_balances` of the changed organizations, each row
/// `[organization, balance, version, held, overdraft limit, next event, generation,
/// open lots from, threshold, top-up below, version locked, generation locked]`, each
/// written only if it still has the version and generation it was locked at: one
/// statement ([`JsonRows`]).
fn update_balances(backend: DbBackend, rows: Vec<Value>, at: DateTime<Utc>) -> Statement {
    let json = JsonRows::new(backend);
    let set = [
        ("balance", 1, "bigint"),
        ("version", 2, "bigint"),
        ("held", 3, "bigint"),
        ("overdraft_limit", 4, "bigint"),
        ("next_event_at", 5, "timestamptz"),
        ("generation", 6, "bigint"),
        ("open_lots_from", 7, "bigint"),
        ("low_balance_threshold", 8, "bigint"),
        ("auto_top_up_below", 9, "bigint"),
    ];
    let assignments: Vec<String> =
        set.iter().map(|(column, i, sql_type)| format!("{column} = {}", json.column(*i, sql_type))).collect();
    let at_placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
    let sql = format!(
        "UPDATE credit_balances SET {}, updated_at = {at_placeholder} FROM {} \
         WHERE credit_balances.organization_id = {}{} \
         AND credit_balances.version = {} AND credit_balances.generation = {}",
        assignments.join(", "),
        json.source(2),
        json.column(0, "text"),
        json.found_by("credit_balances.organization_id", 2),
        json.column(10, "bigint"),
        json.column(11, "bigint"),
    );
    Statement::from_sql_and_values(backend, sql, [at.into(), Value::Array(rows).to_string().into()])
}
