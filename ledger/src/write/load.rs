//! Reading what a [`LedgerTx`] decides against, under the lock: each organization's
//! balance row, open lots and active holds (or the state a previous transaction kept,
//! while its generation still stands), in one statement per table for many
//! organizations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use entity::{credit_balance, credit_hold, credit_lot};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::decide::{HeldCredits, State};
use crate::model::parse_allocations;
use crate::{CreditLot, LedgerError};

use super::{KeptState, LedgerTx, Locked};

impl LedgerTx {
    /// Locks the balance rows of `organizations` not locked yet, in one statement and in
    /// sorted order (the same order on every replica, so no two can deadlock); then
    /// reads their open lots and active holds, which only a holder of that lock changes.
    pub async fn lock<'a>(&mut self, organizations: impl IntoIterator<Item = &'a str>) -> Result<(), LedgerError> {
        let wanted: BTreeSet<&str> = organizations
            .into_iter()
            .filter(|id| !self.locked.contains_key(*id) && !self.missing.contains(*id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // One statement text for any number of organizations (see [`crate::db::one_of`]).
        let backend = self.txn.get_database_backend();
        let rows = credit_balance::Entity::find()
            .filter(crate::db::one_of(backend, "organization_id", wanted.iter().copied()))
            .order_by_asc(credit_balance::Column::OrganizationId)
            .lock_exclusive()
            .all(&self.txn)
            .await?;
        for id in &wanted {
            if !rows.iter().any(|row| row.organization_id == *id) {
                self.missing.insert((*id).to_owned());
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut kept = HashMap::new();
        for row in &rows {
            if let Some(state) = self.kept.remove(&row.organization_id).filter(|kept| kept.still_current(row)) {
                kept.insert(row.organization_id.clone(), state.state);
            }
        }
        let unread: Vec<credit_balance::Model> =
            rows.iter().filter(|row| !kept.contains_key(&row.organization_id)).cloned().collect();
        let mut states = if unread.is_empty() { HashMap::new() } else { load_states(&self.txn, &unread).await? };
        for row in rows {
            let state =
                kept.remove(&row.organization_id).or_else(|| states.remove(&row.organization_id)).unwrap_or_default();
            let (threshold, top_up_below) = (row.low_balance_threshold, row.auto_top_up_below);
            self.locked.insert(
                row.organization_id.clone(),
                Locked { row, state, threshold, top_up_below, raised: Vec::new() },
            );
        }
        Ok(())
    }
}

impl KeptState {
    /// Whether this state is still the organization's, as `row` (read under its lock)
    /// shows it: the same generation, the same figures, and nothing decided and unwritten.
    fn still_current(&self, row: &credit_balance::Model) -> bool {
        let state = &self.state;
        self.generation == row.generation
            && state.balance == row.balance
            && state.version == row.version
            && state.held == row.held
            && state.overdraft_limit == row.overdraft_limit
            && state.entries.is_empty()
            && state.created_lots.is_empty()
            && state.changed_lots.is_empty()
            && state.created_holds.is_empty()
            && state.resolved_holds.is_empty()
    }
}

/// Reads, for locked balance rows, the open lots (`remaining > 0`) and the active holds
/// with their allocations: the whole [`State`] the decision needs.
pub(crate) async fn load_states<C: ConnectionTrait>(
    conn: &C,
    rows: &[credit_balance::Model],
) -> Result<HashMap<String, State>, LedgerError> {
    let mut states: HashMap<String, State> = rows
        .iter()
        .map(|row| {
            let state = State::new(row.balance, row.version, row.overdraft_limit, row.held);
            (row.organization_id.clone(), state)
        })
        .collect();
    // Each organization's lots from its oldest open one on: a range of
    // `ix_credit_lots_org_seq`, however many lots it emptied before. Organizations that
    // start at the same `seq` (new ones all start at 1) share one condition, so many of
    // them are one `IN` list, not one `OR` arm each.
    let mut by_start: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for row in rows {
        by_start.entry(row.open_lots_from).or_default().push(row.organization_id.as_str());
    }
    let mut from_oldest_open = Condition::any();
    for (start, organizations) in by_start {
        from_oldest_open = from_oldest_open.add(
            Condition::all()
                .add(credit_lot::Column::OrganizationId.is_in(organizations))
                .add(credit_lot::Column::Seq.gte(start)),
        );
    }
    let lots = credit_lot::Entity::find()
        .filter(from_oldest_open)
        .filter(credit_lot::Column::Remaining.gt(0))
        .all(conn)
        .await?;
    for lot in lots {
        if let Some(state) = states.get_mut(&lot.organization_id) {
            state.add_lot(CreditLot::try_from(lot)?);
        }
    }
    let holding: Vec<&str> = rows.iter().filter(|row| row.held > 0).map(|row| row.organization_id.as_str()).collect();
    if !holding.is_empty() {
        let holds = credit_hold::Entity::find()
            .filter(credit_hold::Column::OrganizationId.is_in(holding.iter().copied()))
            .filter(credit_hold::Column::Status.eq("ACTIVE"))
            .all(conn)
            .await?;
        for hold in holds {
            let Some(state) = states.get_mut(&hold.organization_id) else { continue };
            state.holds.push(HeldCredits {
                allocations: parse_allocations(&hold.allocations)?,
                id: hold.id,
                amount: hold.amount,
                expires_at: hold.expires_at,
            });
        }
    }
    Ok(states)
}
