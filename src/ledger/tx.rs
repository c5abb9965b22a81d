//! [`LedgerTx`]: one database transaction of the ledger, owning what it has locked,
//! what it will write and the live-event hints it will announce once it commits.
//!
//! Every balance change goes through [`LedgerTx::change`] (or [`LedgerTx::clawback`]):
//! the organization's balance row is locked once (`SELECT … FOR UPDATE` on PostgreSQL,
//! in sorted order so replicas cannot deadlock; SQLite's `BEGIN IMMEDIATE` already holds
//! the whole database), each change is decided in memory by [`super::decide`] against
//! the state the previous one left, and the results are written once at commit: one
//! multi-row `INSERT` of the transactions and one conditional `UPDATE` per organization.
//! Callers cannot forget to announce: [`LedgerTx::commit`] does it, after the commit.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use entity::{credit_balance, credit_transaction};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr, Statement, TransactionTrait,
};

use super::decide::{self, State};
use super::events::{EventHub, Hint, notify_hint};
use super::{Balance, ChangeRequest, CreditTransaction, LedgerError, TransactionKind, new_id, now};

/// An organization's balance row as locked by this transaction.
struct Locked {
    row: credit_balance::Model,
    state: State,
}

/// What a clawback took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clawback {
    /// The `REFUND` transaction, when anything was taken.
    pub transaction: Option<CreditTransaction>,
    /// Credits taken back.
    pub taken: i64,
    /// Credits wanted but already spent, so not recovered.
    pub shortfall: i64,
}

/// A ledger transaction: changes decided under the organizations' locks, written and
/// announced together.
pub struct LedgerTx {
    txn: DatabaseTransaction,
    hub: EventHub,
    at: DateTime<Utc>,
    locked: BTreeMap<String, Locked>,
    /// Organizations looked for and not found.
    missing: BTreeSet<String>,
    /// Transactions decided and not yet written.
    pending: Vec<CreditTransaction>,
    /// Hints to send (inside the transaction on PostgreSQL, after commit on SQLite).
    hints: Vec<Hint>,
}

impl LedgerTx {
    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of
    /// failing when a read lock cannot be upgraded.
    pub async fn begin(db: &sea_orm::DatabaseConnection, hub: &EventHub) -> Result<Self, LedgerError> {
        let options = match db.get_database_backend() {
            DbBackend::Sqlite => sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            },
            _ => {
                sea_orm::TransactionOptions { access_mode: Some(sea_orm::AccessMode::ReadWrite), ..Default::default() }
            }
        };
        let txn = db.begin_with_options(options).await?;
        Ok(Self {
            txn,
            hub: hub.clone(),
            at: now(),
            locked: BTreeMap::new(),
            missing: BTreeSet::new(),
            pending: Vec::new(),
            hints: Vec::new(),
        })
    }

    /// The database transaction, for the caller's own statements in the same commit.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// The time every change of this transaction is stamped with.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// Locks the balance rows of `organizations` not locked yet, in one statement and in
    /// sorted order (the same order on every replica, so no two can deadlock).
    pub async fn lock<'a>(&mut self, organizations: impl IntoIterator<Item = &'a str>) -> Result<(), LedgerError> {
        let wanted: BTreeSet<&str> = organizations
            .into_iter()
            .filter(|id| !self.locked.contains_key(*id) && !self.missing.contains(*id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = credit_balance::Entity::find()
            .filter(credit_balance::Column::OrganizationId.is_in(wanted.iter().copied()))
            .order_by_asc(credit_balance::Column::OrganizationId)
            .lock_exclusive()
            .all(&self.txn)
            .await?;
        for row in rows {
            let state = State { balance: row.balance, version: row.version };
            self.locked.insert(row.organization_id.clone(), Locked { row, state });
        }
        for id in wanted {
            if !self.locked.contains_key(id) {
                self.missing.insert(id.to_owned());
            }
        }
        Ok(())
    }

    /// The organization's balance as this transaction sees it (changes included).
    pub async fn balance(&mut self, organization_id: &str) -> Result<Balance, LedgerError> {
        self.lock([organization_id]).await?;
        let locked = self.locked.get(organization_id).ok_or(LedgerError::OrganizationNotFound)?;
        Ok(balance_of(locked, self.at))
    }

    /// Decides one change against the organization's locked state. A refusal
    /// ([`LedgerError::InsufficientCredits`], say) changes nothing and leaves the
    /// transaction usable for other changes.
    pub async fn change(&mut self, request: &ChangeRequest) -> Result<(CreditTransaction, Balance), LedgerError> {
        self.lock([request.organization_id.as_str()]).await?;
        let at = self.at;
        let locked = self.locked.get_mut(&request.organization_id).ok_or(LedgerError::OrganizationNotFound)?;
        let entry = decide::change(&mut locked.state, request.delta)?;
        let transaction = CreditTransaction {
            id: new_id("ctx"),
            organization_id: request.organization_id.clone(),
            seq: entry.seq,
            kind: request.kind,
            amount: entry.amount,
            balance_after: entry.balance_after,
            description: request.description.clone(),
            reference_type: request.reference_type.clone(),
            reference_id: request.reference_id.clone(),
            idempotency_key: request.idempotency_key.clone(),
            created_at: at,
        };
        let balance = balance_of(locked, at);
        self.pending.push(transaction.clone());
        Ok((transaction, balance))
    }

    /// Takes back up to `wanted` credits as a `REFUND`, but never more than the balance:
    /// credits already spent are not recovered, and the shortfall is written in the
    /// transaction's description.
    pub async fn clawback(
        &mut self,
        organization_id: &str,
        wanted: i64,
        description: &str,
        reference: (&str, &str),
    ) -> Result<Clawback, LedgerError> {
        self.lock([organization_id]).await?;
        let locked = self.locked.get(organization_id).ok_or(LedgerError::OrganizationNotFound)?;
        let (taken, shortfall) = decide::clawback(&locked.state, wanted);
        if taken == 0 {
            return Ok(Clawback { transaction: None, taken, shortfall });
        }
        let description = if shortfall > 0 {
            format!("{description}; {shortfall} credits were already spent and not recovered")
        } else {
            description.to_owned()
        };
        let request = ChangeRequest {
            organization_id: organization_id.to_owned(),
            kind: TransactionKind::Refund,
            delta: -taken,
            description: Some(description),
            reference_type: Some(reference.0.to_owned()),
            reference_id: Some(reference.1.to_owned()),
            idempotency_key: None,
        };
        let (transaction, _) = self.change(&request).await?;
        Ok(Clawback { transaction: Some(transaction), taken, shortfall })
    }

    /// Announces `hint` with this transaction's commit (a threshold change, say).
    pub fn hint(&mut self, hint: Hint) {
        self.hints.push(hint);
    }

    /// Writes what was decided: the transactions in one statement, then every changed
    /// organization's new state in another.
    ///
    /// A taken idempotency key is [`LedgerError::DuplicateIdempotencyKey`]; the caller
    /// must then roll back.
    async fn flush(&mut self) -> Result<(), LedgerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let rows = pending.iter().map(|transaction| credit_transaction::ActiveModel {
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
            created_at: Set(transaction.created_at),
        });
        // Within SQLite's and PostgreSQL's bind-parameter limits (11 a row).
        let rows: Vec<_> = rows.collect();
        for chunk in rows.chunks(2_000) {
            let inserted =
                credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(&self.txn).await;
            if let Err(error) = inserted {
                return Err(match error.sql_err() {
                    Some(SqlErr::UniqueConstraintViolation(message)) if message.contains("idempotency_key") => {
                        LedgerError::DuplicateIdempotencyKey
                    }
                    _ => error.into(),
                });
            }
        }
        let mut last_seq: BTreeMap<&str, i64> = BTreeMap::new();
        for transaction in &pending {
            last_seq.insert(&transaction.organization_id, transaction.seq);
        }
        let changed: Vec<(&str, &Locked)> =
            last_seq.keys().filter_map(|id| self.locked.get(*id).map(|locked| (*id, locked))).collect();
        for chunk in changed.chunks(500) {
            let statement = update_balances(self.txn.get_database_backend(), chunk, self.at);
            let updated = self.txn.execute_raw(statement).await?;
            if updated.rows_affected() != chunk.len() as u64 {
                return Err(LedgerError::internal("a balance changed under its lock"));
            }
        }
        for (organization_id, seq) in last_seq {
            if let Some(locked) = self.locked.get_mut(organization_id) {
                locked.row.balance = locked.state.balance;
                locked.row.version = locked.state.version;
                locked.row.updated_at = self.at;
            }
            self.hints.push(Hint::Changed { organization_id: organization_id.to_owned(), seq });
        }
        Ok(())
    }

    /// Writes, commits and announces. Nothing is announced unless the commit succeeded.
    pub async fn commit(mut self) -> Result<(), LedgerError> {
        self.flush().await?;
        let postgres = self.txn.get_database_backend() == DbBackend::Postgres;
        if postgres {
            // Delivered to every replica if and when this commits.
            for hint in &self.hints {
                notify_hint(&self.txn, hint).await?;
            }
        }
        self.txn.commit().await?;
        if !postgres {
            for hint in self.hints {
                self.hub.publish(hint);
            }
        }
        Ok(())
    }

    /// Abandons everything decided; nothing is written or announced.
    pub async fn rollback(self) -> Result<(), LedgerError> {
        Ok(self.txn.rollback().await?)
    }
}

/// One statement that writes the new state of every organization in `changed`, each
/// conditional on the version it had when locked (so that a write which bypassed the lock
/// could never be overwritten silently: then fewer rows match).
fn update_balances(backend: DbBackend, changed: &[(&str, &Locked)], at: DateTime<Utc>) -> Statement {
    let mut values: Vec<sea_orm::Value> = vec![at.into()];
    let mut rows = Vec::with_capacity(changed.len());
    let parameter = |value: sea_orm::Value, values: &mut Vec<sea_orm::Value>| {
        values.push(value);
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    };
    for (organization_id, locked) in changed {
        let row = [
            parameter((*organization_id).to_owned().into(), &mut values),
            parameter(locked.state.balance.into(), &mut values),
            parameter(locked.state.version.into(), &mut values),
            parameter(locked.row.version.into(), &mut values),
        ];
        rows.push(format!("({})", row.join(", ")));
    }
    let at = match backend {
        DbBackend::Postgres => "$1",
        _ => "?",
    };
    // `VALUES` columns are column1, column2 … on both engines.
    let sql = format!(
        "UPDATE credit_balances SET balance = v.column2, version = v.column3, updated_at = {at} \
         FROM (VALUES {}) AS v WHERE credit_balances.organization_id = v.column1 AND credit_balances.version = v.column4",
        rows.join(", ")
    );
    Statement::from_sql_and_values(backend, sql, values)
}

fn balance_of(locked: &Locked, at: DateTime<Utc>) -> Balance {
    let changed = locked.state.version != locked.row.version;
    Balance {
        id: locked.row.id.clone(),
        organization_id: locked.row.organization_id.clone(),
        balance: locked.state.balance,
        version: locked.state.version,
        updated_at: if changed { at } else { locked.row.updated_at },
    }
}
