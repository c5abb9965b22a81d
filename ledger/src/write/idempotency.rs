//! Idempotency keys under the lock: which of a batch's keys are taken already, and by
//! which kind (a transaction or a hold), so that a reused key is answered inside its
//! batch (a replay or a conflict) and never meets the unique index.

use std::collections::HashMap;

use entity::{credit_hold, credit_transaction};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::LedgerError;
use crate::commit::op::{KeyUse, Op};

use super::LedgerTx;

impl LedgerTx {
    /// Of the idempotency keys `ops` carry, those already taken in their organization's
    /// one namespace (consumes, grants and holds), and by what. Run under the
    /// organizations' locks, which every writer of a key holds: what it finds stays
    /// true until this transaction commits, so the committer answers a taken key
    /// before writing and never meets the unique index.
    pub async fn keys_taken(&self, ops: &[&Op]) -> Result<HashMap<(String, String), KeyUse>, LedgerError> {
        let keyed: Vec<&Op> = ops.iter().copied().filter(|op| op.idempotency_key().is_some()).collect();
        let mut taken = HashMap::new();
        if keyed.is_empty() {
            return Ok(taken);
        }
        let organizations = || keyed.iter().map(|op| op.organization_id());
        let keys = || keyed.iter().filter_map(|op| op.idempotency_key());
        let holds = credit_hold::Entity::find()
            .select_only()
            .column(credit_hold::Column::OrganizationId)
            .column(credit_hold::Column::IdempotencyKey)
            .filter(credit_hold::Column::OrganizationId.is_in(organizations()))
            .filter(credit_hold::Column::IdempotencyKey.is_in(keys()))
            .into_tuple::<(String, Option<String>)>()
            .all(&self.txn)
            .await?;
        let transactions = credit_transaction::Entity::find()
            .select_only()
            .column(credit_transaction::Column::OrganizationId)
            .column(credit_transaction::Column::IdempotencyKey)
            .filter(credit_transaction::Column::OrganizationId.is_in(organizations()))
            .filter(credit_transaction::Column::IdempotencyKey.is_in(keys()))
            .into_tuple::<(String, Option<String>)>()
            .all(&self.txn)
            .await?;
        let found = holds.into_iter().map(|row| (row, KeyUse::Hold));
        let found = found.chain(transactions.into_iter().map(|row| (row, KeyUse::Transaction)));
        for ((organization_id, key), by) in found {
            if let Some(key) = key {
                taken.insert((organization_id, key), by);
            }
        }
        Ok(taken)
    }
}
