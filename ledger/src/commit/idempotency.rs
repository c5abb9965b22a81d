//! Idempotency keys and retries, in one place.
//!
//! An organization's consumes, grants and holds share one namespace of keys. A request
//! whose key is taken is never applied twice and never reaches the unique index:
//! - under the lock, [`Keys`] knows every key a batch carries that is taken (in the
//!   database, or earlier in the same batch) and by which kind; the committer answers
//!   such a request without applying it: its own kind's duplicate, which
//!   [`Ledger::submit_keyed`] then answers with its replay (the original, when every
//!   field matches; else [`LedgerError::IdempotencyConflict`]), the other kind's
//!   conflict. There is no look for the key before the lock: a retry is rare, and that
//!   look, a read for every keyed request, cost more than the retries it spared the
//!   queue (one hot organization's keyed consumes, docs/performance.md, session 19);
//! - a refusal that raced its own original (insufficient credits because the original
//!   spent them) is answered with the original's replay.
//!
//! The one retry policy is [`retrying`]: the committer runs a batch through it, and a
//! write outside the committer (a void, an overdraft limit, a sweep) runs its
//! [`LedgerTx`] through it and ends it with [`LedgerTx::finish`]; deleting and
//! disabling a webhook endpoint run through it too. Nothing retries around any of them,
//! so attempts never multiply.

use std::collections::{BTreeSet, HashMap};

use entity::{credit_hold, credit_lot, credit_transaction};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, SqlErr, Statement};

use super::op::{Done, KeyUse, Op};
use crate::write::LedgerTx;
use crate::{
    Applied, ChangeRequest, CreditLot, CreditTransaction, HoldCreated, HoldRequest, Ledger, LedgerError, Retryable,
};

/// The keys of a batch's requests that are taken, and by which kind of request.
pub(crate) struct Keys(HashMap<(String, String), KeyUse>);

impl Keys {
    /// Of the keys `ops` carry, those taken already in their organizations. Run under
    /// the organizations' locks, which every writer of a key holds: what it finds stays
    /// true until this transaction commits.
    pub(crate) async fn taken(tx: &LedgerTx, ops: &[&Op]) -> Result<Self, LedgerError> {
        let keyed: Vec<&Op> = ops.iter().copied().filter(|op| op.idempotency_key().is_some()).collect();
        let mut taken = HashMap::new();
        if keyed.is_empty() {
            return Ok(Self(taken));
        }
        let organizations: BTreeSet<&str> = keyed.iter().map(|op| op.organization_id()).collect();
        let keys: BTreeSet<&str> = keyed.iter().filter_map(|op| op.idempotency_key()).collect();
        let organizations = serde_json::Value::from(organizations.into_iter().collect::<Vec<_>>()).to_string();
        let keys = serde_json::Value::from(keys.into_iter().collect::<Vec<_>>()).to_string();
        // Both tables in one statement, its text the same for any batch (the keys as one
        // JSON parameter, see [`crate::db::JsonRows`]); `IS NOT NULL` lets each engine use
        // the index of present keys only.
        let backend = tx.conn().get_database_backend();
        let (first, second) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
        let of = |table: &str, by: &str| {
            format!(
                "SELECT organization_id, idempotency_key, '{by}' AS used_by FROM {table} WHERE {} AND {} \
                 AND idempotency_key IS NOT NULL",
                crate::db::in_json_array(backend, "organization_id", first),
                crate::db::in_json_array(backend, "idempotency_key", second),
            )
        };
        let sql = format!("{} UNION ALL {}", of("credit_holds", "HOLD"), of("credit_transactions", "TRANSACTION"));
        let mut values: Vec<sea_orm::Value> = vec![organizations.clone().into(), keys.clone().into()];
        if backend != DbBackend::Postgres {
            // SQLite numbers each `?` anew.
            values.extend([organizations.into(), keys.into()]);
        }
        let rows = tx.conn().query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        for row in rows {
            let organization_id: String = row.try_get("", "organization_id")?;
            let key: String = row.try_get("", "idempotency_key")?;
            let by = if row.try_get::<String>("", "used_by")? == "HOLD" { KeyUse::Hold } else { KeyUse::Transaction };
            taken.insert((organization_id, key), by);
        }
        Ok(Self(taken))
    }

    /// Why `op` must not be applied, if its key is taken: by its own kind a duplicate
    /// (its caller answers with the replay), by the other kind a conflict.
    pub(crate) fn refusal(&self, op: &Op) -> Option<LedgerError> {
        let taken_by = self.0.get(&Self::key_of(op)?)?;
        Some(if *taken_by == op.key_use() {
            LedgerError::DuplicateIdempotencyKey
        } else {
            LedgerError::IdempotencyConflict
        })
    }

    /// Records that `op` was applied: its key is taken for the rest of the batch. A
    /// refused request takes no key (a refusal is not remembered).
    pub(crate) fn take(&mut self, op: &Op) {
        if let Some(key) = Self::key_of(op) {
            self.0.insert(key, op.key_use());
        }
    }

    fn key_of(op: &Op) -> Option<(String, String)> {
        Some((op.organization_id().to_owned(), op.idempotency_key()?.to_owned()))
    }
}

/// A unique-index violation on an idempotency key as
/// [`LedgerError::DuplicateIdempotencyKey`] (a writer outside the lock's protocol lost
/// the race); any other database error as it is.
pub(crate) fn duplicate_key_or(error: sea_orm::DbErr) -> LedgerError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) if message.contains("idempotency_key") => {
            LedgerError::DuplicateIdempotencyKey
        }
        _ => error.into(),
    }
}

impl Ledger {
    /// Submits `op` to the committer, answering its key's original instead when there
    /// is one: when the committer found the key taken, and when a refusal may be
    /// explained by the original having committed first. `answer` turns the committer's
    /// result into the caller's; `replay` finds the original under the key.
    pub(crate) async fn submit_keyed<T, Replay>(
        &self,
        op: Op,
        answer: impl FnOnce(Done) -> Option<T>,
        replay: impl Fn() -> Replay,
    ) -> Result<T, LedgerError>
    where
        Replay: Future<Output = Result<Option<T>, LedgerError>>,
    {
        match self.committer.submit(&self.db, &self.events, &self.clock, op).await {
            Ok(done) => answer(done).ok_or_else(|| LedgerError::internal("answered as another operation")),
            Err(LedgerError::DuplicateIdempotencyKey) => {
                // Committed first: earlier in the same batch, by an earlier batch, or by
                // another replica.
                replay().await?.ok_or_else(|| LedgerError::internal("idempotency key vanished after conflict"))
            }
            Err(refusal @ (LedgerError::InsufficientCredits { .. } | LedgerError::BalanceLimitExceeded { .. })) => {
                replay().await?.ok_or(refusal)
            }
            Err(error) => Err(error),
        }
    }

    /// The original transaction under `request`'s idempotency key, if there is one.
    pub(crate) async fn replay_change(&self, request: &ChangeRequest) -> Result<Option<Applied>, LedgerError> {
        let Some(key) = &request.idempotency_key else {
            return Ok(None);
        };
        let Some(original) = credit_transaction::Entity::find()
            .filter(credit_transaction::Column::OrganizationId.eq(&request.organization_id))
            .filter(credit_transaction::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let original = CreditTransaction::try_from(original)?;
        let lot = credit_lot::Entity::find()
            .filter(credit_lot::Column::SourceTransactionId.eq(&original.id))
            .filter(credit_lot::Column::Seq.eq(original.seq))
            .one(&self.db)
            .await?
            .map(CreditLot::try_from)
            .transpose()?;
        if !request.matches(&original, lot.as_ref()) {
            return Err(LedgerError::IdempotencyConflict);
        }
        let balance = self.balance(&request.organization_id).await?;
        Ok(Some(Applied { transaction: original, balance, lot: lot.map(|lot| lot.id), replayed: true }))
    }

    /// The hold created under `request`'s key, if any (a different request under it is
    /// [`LedgerError::IdempotencyConflict`]). A consume's use of the key is found under
    /// the lock, by [`Keys`].
    pub(crate) async fn replay_hold(&self, request: &HoldRequest) -> Result<Option<HoldCreated>, LedgerError> {
        let Some(key) = &request.idempotency_key else { return Ok(None) };
        let Some(row) = credit_hold::Entity::find()
            .filter(credit_hold::Column::OrganizationId.eq(&request.organization_id))
            .filter(credit_hold::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let hold = self.hold_of_row(row).await?;
        if !request.matches(&hold) {
            return Err(LedgerError::IdempotencyConflict);
        }
        let balance = self.balance(&request.organization_id).await?;
        Ok(Some(HoldCreated { hold, balance, replayed: true }))
    }
}

/// Runs `work` again while it fails with a retryable error (a serialization failure or
/// deadlock), a few times, with a short jittered pause; then gives up with that error.
pub async fn retrying<T, E, F, Fut>(mut work: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match work().await {
            Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u8 % 8);
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5 + jitter)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
