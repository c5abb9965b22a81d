//! Reading lots and allocations, as of now: a lot whose expiry has come but is not yet
//! written reads as `EXPIRED`, with only its held credits remaining, exactly as the
//! decision step will write it.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use entity::{credit_balance, credit_lot};
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select};

use crate::{CreditLot, Ledger, LedgerError};
use crate::{LotCategory, LotStatus};

/// Which lots to list. Every present condition must hold.
#[derive(Clone, Debug, Default)]
pub struct LotFilter {
    /// Any of these statuses (as of now).
    pub statuses: Option<Vec<LotStatus>>,
    /// Any of these categories.
    pub categories: Option<Vec<LotCategory>>,
}

/// A lot as of `at`: an unwritten expiry applied.
pub fn as_of(mut lot: CreditLot, at: DateTime<Utc>) -> CreditLot {
    if lot.status == LotStatus::Active && lot.expires_at.is_some_and(|expires_at| expires_at <= at) {
        lot.status = LotStatus::Expired;
        lot.remaining = lot.held;
    }
    lot
}

fn status_condition(status: LotStatus, at: DateTime<Utc>) -> Condition {
    use credit_lot::Column;
    let unexpired = Condition::any().add(Column::ExpiresAt.is_null()).add(Column::ExpiresAt.gt(at));
    match status {
        LotStatus::Active => Condition::all().add(Column::Status.eq("ACTIVE")).add(unexpired),
        LotStatus::Expired => Condition::any()
            .add(Column::Status.eq("EXPIRED"))
            .add(Condition::all().add(Column::Status.eq("ACTIVE")).add(Column::ExpiresAt.lte(at))),
        other => Condition::all().add(Column::Status.eq(other.as_str())),
    }
}

fn filtered(organization_id: &str, filter: &LotFilter, at: DateTime<Utc>) -> Select<credit_lot::Entity> {
    let mut query = credit_lot::Entity::find().filter(credit_lot::Column::OrganizationId.eq(organization_id));
    if let Some(statuses) = &filter.statuses {
        let any = statuses.iter().fold(Condition::any(), |any, status| any.add(status_condition(*status, at)));
        query = query.filter(any);
    }
    if let Some(categories) = &filter.categories {
        query = query.filter(credit_lot::Column::Category.is_in(categories.iter().map(|category| category.as_str())));
    }
    query
}

impl Ledger {
    /// A page of the organization's lots, newest first, after the lot created by
    /// sequence number `after`; and whether more follow.
    pub async fn lots(
        &self,
        organization_id: &str,
        filter: &LotFilter,
        count: u64,
        after: Option<i64>,
    ) -> Result<(Vec<CreditLot>, bool), LedgerError> {
        let at = self.now();
        let mut query = filtered(organization_id, filter, at);
        if let Some(after) = after {
            query = query.filter(credit_lot::Column::Seq.lt(after));
        }
        let mut rows = query
            .order_by_desc(credit_lot::Column::Seq)
            .order_by_desc(credit_lot::Column::Id)
            .limit(count + 1)
            .all(&self.db)
            .await?;
        let has_next = rows.len() as u64 > count;
        rows.truncate(count as usize);
        let lots: Result<Vec<_>, _> = rows.into_iter().map(CreditLot::try_from).collect();
        Ok((self.lots_as_of(lots?, at).await?, has_next))
    }

    /// How many lots match `filter`.
    pub async fn count_lots(&self, organization_id: &str, filter: &LotFilter) -> Result<u64, LedgerError> {
        Ok(filtered(organization_id, filter, self.now()).count(&self.db).await?)
    }

    /// Lots by id, as of now; unknown ids are absent.
    pub async fn lots_by_id(&self, ids: &[String]) -> Result<Vec<CreditLot>, LedgerError> {
        let at = self.now();
        let lots: Result<Vec<_>, _> = credit_lot::Entity::find()
            .filter(credit_lot::Column::Id.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(CreditLot::try_from)
            .collect();
        self.lots_as_of(lots?, at).await
    }

    /// Lots as stored, brought to `at`: for an organization with an expiry or a hold
    /// deadline due and not yet written, as the decision step will leave them (an
    /// expired hold's credits back in their lots, an expired lot's remainder gone).
    async fn lots_as_of(&self, lots: Vec<CreditLot>, at: DateTime<Utc>) -> Result<Vec<CreditLot>, LedgerError> {
        let organizations: BTreeSet<&str> = lots.iter().map(|lot| lot.organization_id.as_str()).collect();
        let due: Vec<String> = if organizations.is_empty() {
            Vec::new()
        } else {
            credit_balance::Entity::find()
                .select_only()
                .column(credit_balance::Column::OrganizationId)
                .filter(credit_balance::Column::OrganizationId.is_in(organizations.iter().copied()))
                .filter(credit_balance::Column::NextEventAt.lte(at))
                .into_tuple()
                .all(&self.db)
                .await?
        };
        let mut states = if due.is_empty() { HashMap::new() } else { self.snapshot(&due).await?.1 };
        for state in states.values_mut() {
            crate::decide::settle(state, at);
        }
        Ok(lots
            .into_iter()
            .map(|lot| {
                let settled =
                    states.get(&lot.organization_id).and_then(|state| state.lots().iter().find(|l| l.id == lot.id));
                match settled {
                    Some(settled) => settled.clone(),
                    None => as_of(lot, at),
                }
            })
            .collect())
    }

    /// Voids a lot (see [`crate::LedgerTx::void_lot`]) in a transaction of its own.
    pub async fn void_lot(
        &self,
        lot_id: &str,
        description: &str,
    ) -> Result<(CreditLot, Option<crate::CreditTransaction>, crate::Balance), LedgerError> {
        crate::check_text("description", description, crate::MAX_DESCRIPTION_LEN)?;
        crate::retrying(|| async {
            let mut tx = self.begin().await?;
            let voided = tx.void_lot(lot_id, description).await;
            tx.finish(voided).await
        })
        .await
    }

    /// Sets an organization's overdraft limit; below its current debt is refused.
    pub async fn set_overdraft_limit(&self, organization_id: &str, limit: i64) -> Result<crate::Balance, LedgerError> {
        crate::retrying(|| async {
            let mut tx = self.begin().await?;
            let balance = tx.set_overdraft_limit(organization_id, limit).await;
            tx.finish(balance).await
        })
        .await
    }
}
