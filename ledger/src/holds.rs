//! Holds: credits reserved now, captured or released later (an LLM call, a render).
//!
//! Creating, capturing and releasing a hold are decided like consumes: in
//! [`super::decide`], under the organization's lock, through the group committer (the
//! requests and results are in `ops.rs`). This module holds the ledger's hold
//! operations, the idempotent replays answered without the lock, and the reads
//! (`creditHolds`, `node`).

use chrono::{DateTime, Utc};
use entity::credit_hold;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select};

use super::{Ledger, LedgerError};
use crate::commit::op::{Done, Op};
use crate::model::parse_allocations;
use crate::{CaptureRequest, CreditHold, HoldCaptured, HoldCreated, HoldRequest, HoldStatus};

/// Which holds to list.
#[derive(Clone, Debug, Default)]
pub struct HoldFilter {
    /// Any of these statuses (as of now).
    pub statuses: Option<Vec<HoldStatus>>,
}

fn status_condition(status: HoldStatus, at: DateTime<Utc>) -> Condition {
    use credit_hold::Column;
    match status {
        HoldStatus::Active => Condition::all().add(Column::Status.eq("ACTIVE")).add(Column::ExpiresAt.gt(at)),
        HoldStatus::Expired => Condition::any()
            .add(Column::Status.eq("EXPIRED"))
            .add(Condition::all().add(Column::Status.eq("ACTIVE")).add(Column::ExpiresAt.lte(at))),
        other => Condition::all().add(Column::Status.eq(other.as_str())),
    }
}

fn filtered(organization_id: &str, filter: &HoldFilter, at: DateTime<Utc>) -> Select<credit_hold::Entity> {
    let mut query = credit_hold::Entity::find().filter(credit_hold::Column::OrganizationId.eq(organization_id));
    if let Some(statuses) = &filter.statuses {
        let any = statuses.iter().fold(Condition::any(), |any, status| any.add(status_condition(*status, at)));
        query = query.filter(any);
    }
    query
}

/// Where a page of holds starts: after the hold created at this instant with this id.
pub type HoldCursor = (DateTime<Utc>, String);

impl Ledger {
    /// Reserves credits in draw order (then overdraft), if spendable; with an
    /// idempotency key, a retry returns the original hold (`replayed`).
    #[tracing::instrument(skip(self, request), fields(organization = %request.organization_id, amount = request.amount))]
    pub async fn create_hold(&self, request: HoldRequest) -> Result<HoldCreated, LedgerError> {
        let answer = |done| match done {
            Done::Held(hold, balance) => Some(HoldCreated { hold, balance, replayed: false }),
            _ => None,
        };
        self.submit_keyed(Op::CreateHold(request.clone()), answer, || self.replay_hold(&request)).await
    }

    /// Captures a hold: one `CONSUMPTION` of `amount` (default the whole hold); less
    /// releases the rest, more draws the excess. A hold resolves once: the same capture
    /// again is a replay, anything else [`LedgerError::HoldNotActive`].
    #[tracing::instrument(skip(self, request), fields(organization = %request.organization_id, hold = %request.hold_id))]
    pub async fn capture_hold(&self, request: CaptureRequest) -> Result<HoldCaptured, LedgerError> {
        // A hold written as ended never comes back: answered without the lock. One only
        // past its TTL goes through the lock, where a capture or release decided before
        // the instant (and not yet committed) is seen.
        if let Some(hold) = self.ended_hold(&request.organization_id, &request.hold_id).await? {
            return self.captured_again(&request, hold).await;
        }
        match self.committer.submit(&self.db, &self.events, &self.clock, Op::Capture(request)).await? {
            Done::Captured(captured) => Ok(*captured),
            _ => Err(LedgerError::internal("a capture was answered as another operation")),
        }
    }

    /// The answer to capturing a hold that has ended: its capture replayed, or why not.
    pub(super) async fn captured_again(
        &self,
        request: &CaptureRequest,
        hold: CreditHold,
    ) -> Result<HoldCaptured, LedgerError> {
        if !request.replays(&hold) {
            return Err(LedgerError::HoldNotActive { status: hold.status.as_str() });
        }
        let transaction_id = hold.transaction_id.clone().ok_or_else(|| LedgerError::internal("capture unrecorded"))?;
        let transaction =
            self.transaction(&transaction_id).await?.ok_or(LedgerError::NotFound("credit transaction"))?;
        let balance = self.balance(&hold.organization_id).await?;
        Ok(HoldCaptured { hold, transaction, balance, replayed: true })
    }

    /// Releases a hold: its credits are available again (those of a lot that has ended
    /// since leave at once). Releasing a released or expired hold returns it unchanged;
    /// a captured one is [`LedgerError::HoldNotActive`].
    #[tracing::instrument(skip(self))]
    pub async fn release_hold(&self, organization_id: &str, hold_id: &str) -> Result<CreditHold, LedgerError> {
        if let Some(hold) = self.ended_hold(organization_id, hold_id).await? {
            return match hold.status {
                HoldStatus::Captured => Err(LedgerError::HoldNotActive { status: hold.status.as_str() }),
                _ => Ok(hold),
            };
        }
        let op = Op::Release { organization_id: organization_id.to_owned(), hold_id: hold_id.to_owned() };
        match self.committer.submit(&self.db, &self.events, &self.clock, op).await? {
            Done::Released(hold, _) => Ok(hold),
            _ => Err(LedgerError::internal("a release was answered as another operation")),
        }
    }

    /// A hold by id, as of now.
    pub async fn hold(&self, id: &str) -> Result<Option<CreditHold>, LedgerError> {
        match credit_hold::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(row) => Ok(Some(self.hold_of_row(row).await?)),
            None => Ok(None),
        }
    }

    /// The organization's hold `id` if it is written as ended (captured, released or
    /// expired by a sweep), as written; `None` while its row says `ACTIVE`, even past its
    /// TTL (only the lock can tell whether a capture or release decided before the
    /// deadline is still committing). One read of the row while it is active.
    async fn ended_hold(&self, organization_id: &str, id: &str) -> Result<Option<CreditHold>, LedgerError> {
        let row = credit_hold::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .filter(|row| row.organization_id == organization_id)
            .ok_or(LedgerError::NotFound("credit hold"))?;
        if row.status == HoldStatus::Active.as_str() {
            return Ok(None);
        }
        let parts = parse_allocations(&row.allocations)?;
        // Ended holds read the same at any instant.
        Ok(Some(CreditHold::from_row(row, parts, self.now())?))
    }

    /// The organization a hold belongs to, if the hold exists.
    pub async fn hold_organization(&self, id: &str) -> Result<Option<String>, LedgerError> {
        Ok(credit_hold::Entity::find_by_id(id.to_owned())
            .select_only()
            .column(credit_hold::Column::OrganizationId)
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    pub(crate) async fn hold_of_row(&self, row: credit_hold::Model) -> Result<CreditHold, LedgerError> {
        let parts = parse_allocations(&row.allocations)?;
        CreditHold::from_row(row, parts, self.now())
    }

    /// A page of the organization's holds, newest first, after `after`; and whether more
    /// follow.
    pub async fn holds(
        &self,
        organization_id: &str,
        filter: &HoldFilter,
        count: u64,
        after: Option<HoldCursor>,
    ) -> Result<(Vec<CreditHold>, bool), LedgerError> {
        let at = self.now();
        let mut query = filtered(organization_id, filter, at);
        if let Some((created_at, id)) = after {
            query = query.filter(Condition::any().add(credit_hold::Column::CreatedAt.lt(created_at)).add(
                Condition::all().add(credit_hold::Column::CreatedAt.eq(created_at)).add(credit_hold::Column::Id.lt(id)),
            ));
        }
        let mut rows = query
            .order_by_desc(credit_hold::Column::CreatedAt)
            .order_by_desc(credit_hold::Column::Id)
            .limit(count + 1)
            .all(&self.db)
            .await?;
        let has_next = rows.len() as u64 > count;
        rows.truncate(count as usize);
        let holds: Result<Vec<_>, _> = rows
            .into_iter()
            .map(|row| {
                let parts = parse_allocations(&row.allocations)?;
                CreditHold::from_row(row, parts, at)
            })
            .collect();
        Ok((holds?, has_next))
    }

    /// How many holds match `filter`.
    pub async fn count_holds(&self, organization_id: &str, filter: &HoldFilter) -> Result<u64, LedgerError> {
        Ok(filtered(organization_id, filter, self.now()).count(&self.db).await?)
    }
}
