//! `credits verify`: every invariant of the books, checked from the rows, organization
//! by organization, stopping at the first that breaks one.
//!
//! For each organization, in its transactions' order:
//! - each transaction's allocations add up to its amount, and its `balance_after` is the
//!   running sum of the amounts before and including it;
//! - the balance row's `balance` is that sum, and its debt (what the allocations without
//!   a lot add up to, negated) is within its overdraft limit;
//! - every lot has `0 ≤ held ≤ remaining ≤ original`, and its `remaining` is what the
//!   allocations naming it add up to (its creation included);
//! - the balance row's `held` is the sum of the active holds' amounts, and the lots'
//!   `held` add up to what those holds' allocations hold of each lot.
//!
//! It reads without the lock, so it is meant for a copy or a quiet database: on a live
//! one, a change committed between two of its reads can look like a break.

use std::collections::HashMap;

use entity::{credit_balance, credit_hold, credit_lot, credit_transaction};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::model::parse_allocations;
use crate::{HoldStatus, Ledger, LedgerError};

/// Transactions read at a time.
const PAGE: u64 = 5_000;

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Organizations checked (all of them when none broke).
    pub organizations: u64,
    /// Transactions read.
    pub transactions: u64,
    /// The first organization that breaks an invariant, and which.
    pub broken: Option<Broken>,
}

/// An organization whose rows break an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// `org_…`
    pub organization_id: String,
    /// What does not hold, with the figures.
    pub invariant: String,
}

impl Ledger {
    /// Checks every invariant of every organization's books (see the module doc), in
    /// the order of their balance rows; stops at the first broken one.
    pub async fn verify(&self) -> Result<Verification, LedgerError> {
        let balances =
            credit_balance::Entity::find().order_by_asc(credit_balance::Column::OrganizationId).all(&self.db).await?;
        let mut verification = Verification { organizations: 0, transactions: 0, broken: None };
        for balance in balances {
            verification.organizations += 1;
            let (read, broken) = self.verify_organization(&balance).await?;
            verification.transactions += read;
            if let Some(invariant) = broken {
                verification.broken = Some(Broken { organization_id: balance.organization_id, invariant });
                break;
            }
        }
        Ok(verification)
    }

    /// Checks one organization; returns how many transactions it read and the first
    /// invariant broken.
    async fn verify_organization(&self, balance: &credit_balance::Model) -> Result<(u64, Option<String>), LedgerError> {
        let organization = balance.organization_id.as_str();
        // What the allocations say of each lot (`None`: the overdraft debt).
        let mut drawn: HashMap<Option<String>, i64> = HashMap::new();
        let mut running: i64 = 0;
        let mut read: u64 = 0;
        let mut after_seq = i64::MIN;
        loop {
            let rows = credit_transaction::Entity::find()
                .filter(credit_transaction::Column::OrganizationId.eq(organization))
                .filter(credit_transaction::Column::Seq.gt(after_seq))
                .order_by_asc(credit_transaction::Column::Seq)
                .limit(PAGE)
                .all(&self.db)
                .await?;
            let Some(last) = rows.last() else { break };
            after_seq = last.seq;
            for row in &rows {
                read += 1;
                running = running.saturating_add(row.amount);
                if row.balance_after != running {
                    let text = format!(
                        "transaction {} has balance_after {} but the running sum is {running}",
                        row.id, row.balance_after
                    );
                    return Ok((read, Some(text)));
                }
                let allocations = row.allocations.as_deref().map(parse_allocations).transpose()?.unwrap_or_default();
                let allocated: i64 = allocations.iter().map(|allocation| allocation.amount).sum();
                if !allocations.is_empty() && allocated != row.amount {
                    let text =
                        format!("transaction {} of {} has allocations adding up to {allocated}", row.id, row.amount);
                    return Ok((read, Some(text)));
                }
                for allocation in allocations {
                    *drawn.entry(allocation.lot_id).or_default() += allocation.amount;
                }
            }
            if (rows.len() as u64) < PAGE {
                break;
            }
        }
        if balance.balance != running {
            return Ok((read, Some(format!("balance {} but its transactions add up to {running}", balance.balance))));
        }
        let debt = -drawn.remove(&None).unwrap_or(0);
        if debt < 0 || debt > balance.overdraft_limit.max(0) {
            let text = format!("overdraft debt {debt} outside 0..={}", balance.overdraft_limit);
            return Ok((read, Some(text)));
        }

        let lots = credit_lot::Entity::find()
            .filter(credit_lot::Column::OrganizationId.eq(organization))
            .all(&self.db)
            .await?;
        let mut lots_held: HashMap<String, i64> = HashMap::new();
        for lot in &lots {
            if !(0 <= lot.held && lot.held <= lot.remaining && lot.remaining <= lot.original) {
                let text = format!(
                    "lot {} has held {}, remaining {}, original {}",
                    lot.id, lot.held, lot.remaining, lot.original
                );
                return Ok((read, Some(text)));
            }
            let allocated = drawn.remove(&Some(lot.id.clone())).unwrap_or(0);
            if allocated != lot.remaining {
                let text =
                    format!("lot {} has remaining {} but its allocations add up to {allocated}", lot.id, lot.remaining);
                return Ok((read, Some(text)));
            }
            lots_held.insert(lot.id.clone(), lot.held);
        }
        if let Some((Some(lot), amount)) = drawn.into_iter().find(|(_, amount)| *amount != 0) {
            return Ok((read, Some(format!("allocations name lot {lot} ({amount}), which does not exist"))));
        }

        let holds = credit_hold::Entity::find()
            .filter(credit_hold::Column::OrganizationId.eq(organization))
            .filter(credit_hold::Column::Status.eq(HoldStatus::Active.as_str()))
            .all(&self.db)
            .await?;
        let held: i64 = holds.iter().map(|hold| hold.amount).sum();
        if balance.held != held {
            return Ok((read, Some(format!("held {} but its active holds add up to {held}", balance.held))));
        }
        let mut holding: HashMap<String, i64> = HashMap::new();
        for hold in &holds {
            for allocation in parse_allocations(&hold.allocations)? {
                if let Some(lot) = allocation.lot_id {
                    *holding.entry(lot).or_default() += allocation.amount;
                }
            }
        }
        for (lot, lot_held) in &lots_held {
            let by_holds = holding.remove(lot).unwrap_or(0);
            if by_holds != *lot_held {
                let text = format!("lot {lot} has held {lot_held} but active holds hold {by_holds} of it");
                return Ok((read, Some(text)));
            }
        }
        if let Some((lot, amount)) = holding.into_iter().find(|(_, amount)| *amount != 0) {
            return Ok((read, Some(format!("active holds hold {amount} of lot {lot}, which does not exist"))));
        }
        Ok((read, None))
    }
}
