//! Holds: credits reserved now, captured or released later (an LLM call, a render).
//!
//! Creating, capturing and releasing a hold are decided like consumes: in
//! [`super::decide`], under the organization's lock, through the group committer. This
//! module holds the requests, the hold as read, the idempotent replays answered without
//! the lock, and the reads (`creditHolds`, `node`).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::{credit_hold, credit_hold_allocation};
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select};

use super::committer::{Done, Op};
use super::decide::{Allocation, HoldStatus};
use super::{Amount, Balance, CreditTransaction, Ledger, LedgerError, MAX_DESCRIPTION_LEN, check_text, retrying};

/// A hold's TTL when the caller gives none.
pub const DEFAULT_HOLD_TTL_SECS: i64 = 900;
/// The longest TTL a hold may have.
pub const MAX_HOLD_TTL_SECS: i64 = 86_400;

/// A hold as read, as of a given instant: past its `expires_at`, an active hold reads as
/// `EXPIRED` even before a sweep writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditHold {
    /// `hld_…`
    pub id: String,
    /// Whose credits.
    pub organization_id: String,
    /// Credits reserved.
    pub amount: i64,
    /// Credits captured, once captured.
    pub captured: Option<i64>,
    /// Where it is in its life.
    pub status: HoldStatus,
    /// What for.
    pub description: String,
    /// What the work is about.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// The key it was created under.
    pub idempotency_key: Option<String>,
    /// The capture's `CONSUMPTION` transaction.
    pub transaction_id: Option<String>,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// Where the credits are reserved (positive; a null lot is overdraft).
    pub allocations: Vec<Allocation>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Latest change (its resolution).
    pub updated_at: DateTime<Utc>,
}

impl CreditHold {
    /// The hold stored in `row`, reserving `allocations`, as of `at`.
    pub(super) fn from_row(
        row: credit_hold::Model,
        allocations: Vec<Allocation>,
        at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        let mut hold = Self {
            status: HoldStatus::parse(&row.status)?,
            id: row.id,
            organization_id: row.organization_id,
            amount: row.amount,
            captured: row.captured,
            description: row.description,
            reference_type: row.reference_type,
            reference_id: row.reference_id,
            idempotency_key: row.idempotency_key,
            transaction_id: row.transaction_id,
            expires_at: row.expires_at,
            allocations,
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        if hold.status == HoldStatus::Active && hold.expires_at <= at {
            hold.status = HoldStatus::Expired;
            hold.updated_at = hold.expires_at;
        }
        Ok(hold)
    }
}

/// A request to reserve credits, already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    /// Whose credits.
    pub organization_id: String,
    /// How many.
    pub amount: i64,
    /// What for.
    pub description: String,
    /// What the work is about.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// Names this one operation; shares the namespace of consumes' keys.
    pub idempotency_key: Option<String>,
    /// How long the hold lives unless captured or released.
    pub ttl_seconds: i64,
}

impl HoldRequest {
    /// Validates a hold: free text as for consumes, `ttl_seconds` 1 to 86400 (default 900).
    pub fn new(
        organization_id: String,
        amount: Amount,
        description: String,
        reference_type: Option<String>,
        reference_id: Option<String>,
        idempotency_key: Option<String>,
        ttl_seconds: Option<i64>,
    ) -> Result<Self, LedgerError> {
        check_text("description", &description, MAX_DESCRIPTION_LEN)?;
        super::types::check_optional_labels(&reference_type, &reference_id, &idempotency_key)?;
        let ttl_seconds = ttl_seconds.unwrap_or(DEFAULT_HOLD_TTL_SECS);
        if !(1..=MAX_HOLD_TTL_SECS).contains(&ttl_seconds) {
            return Err(LedgerError::InvalidInput(format!(
                "ttlSeconds must be between 1 and {MAX_HOLD_TTL_SECS}, got {ttl_seconds}"
            )));
        }
        Ok(Self {
            organization_id,
            amount: amount.get(),
            description,
            reference_type,
            reference_id,
            idempotency_key,
            ttl_seconds,
        })
    }

    /// Whether `original`, created under the same key, was this same request.
    fn matches(&self, original: &CreditHold) -> bool {
        original.amount == self.amount
            && original.description == self.description
            && original.reference_type == self.reference_type
            && original.reference_id == self.reference_id
            && (original.expires_at - original.created_at) == Duration::seconds(self.ttl_seconds)
    }

    /// The stored row of the hold this request creates at `at`.
    pub(super) fn row(&self, id: String, at: DateTime<Utc>) -> credit_hold::Model {
        credit_hold::Model {
            id,
            organization_id: self.organization_id.clone(),
            amount: self.amount,
            captured: None,
            status: HoldStatus::Active.as_str().to_owned(),
            description: self.description.clone(),
            reference_type: self.reference_type.clone(),
            reference_id: self.reference_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            transaction_id: None,
            expires_at: at + Duration::seconds(self.ttl_seconds),
            created_at: at,
            updated_at: at,
        }
    }
}

/// A request to capture a hold (its organization found by [`Ledger::hold`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRequest {
    /// The hold's organization.
    pub organization_id: String,
    /// `hld_…`
    pub hold_id: String,
    /// Credits to capture; the whole hold when absent.
    pub amount: Option<i64>,
    /// The transaction's description; the hold's when absent.
    pub description: Option<String>,
}

impl CaptureRequest {
    /// Validates a capture.
    pub fn new(
        organization_id: String,
        hold_id: String,
        amount: Option<Amount>,
        description: Option<String>,
    ) -> Result<Self, LedgerError> {
        if let Some(description) = &description {
            check_text("description", description, MAX_DESCRIPTION_LEN)?;
        }
        Ok(Self { organization_id, hold_id, amount: amount.map(Amount::get), description })
    }

    /// Whether capturing `hold` again with this request is a replay of its capture.
    pub(super) fn replays(&self, hold: &CreditHold) -> bool {
        hold.status == HoldStatus::Captured && hold.captured == Some(self.amount.unwrap_or(hold.amount))
    }
}

/// The result of `createHold`.
#[derive(Clone, Debug)]
pub struct HoldCreated {
    /// The hold (for a replay, the original, as of now).
    pub hold: CreditHold,
    /// The balance after (for a replay, now).
    pub balance: Balance,
    /// Whether this answers a retry under the same idempotency key.
    pub replayed: bool,
}

/// The result of `captureHold`.
#[derive(Clone, Debug)]
pub struct HoldCaptured {
    /// The hold, captured.
    pub hold: CreditHold,
    /// Its `CONSUMPTION` transaction.
    pub transaction: CreditTransaction,
    /// The balance after (for a replay, now).
    pub balance: Balance,
    /// Whether this answers a repeated capture.
    pub replayed: bool,
}

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
        retrying(|| async {
            if let Some(replayed) = self.replay_hold(&request).await? {
                return Ok(replayed);
            }
            let outcome =
                self.committer.submit(&self.db, &self.events, &self.clock, Op::CreateHold(request.clone())).await;
            match outcome {
                Ok(Done::Held(hold, balance)) => Ok(HoldCreated { hold, balance, replayed: false }),
                Ok(_) => Err(LedgerError::internal("a hold was answered as another operation")),
                Err(error @ (LedgerError::DuplicateIdempotencyKey | LedgerError::InsufficientCredits { .. })) => {
                    // The original under this key may have committed first.
                    match self.replay_hold(&request).await? {
                        Some(replayed) => Ok(replayed),
                        None if matches!(error, LedgerError::DuplicateIdempotencyKey) => {
                            Err(LedgerError::internal("idempotency key vanished after conflict"))
                        }
                        None => Err(error),
                    }
                }
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// The hold created under `request`'s key, if any (a different request under it is
    /// [`LedgerError::IdempotencyConflict`]). A consume's use of the key is found under
    /// the lock, by the committer.
    async fn replay_hold(&self, request: &HoldRequest) -> Result<Option<HoldCreated>, LedgerError> {
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

    /// Captures a hold: one `CONSUMPTION` of `amount` (default the whole hold); less
    /// releases the rest, more draws the excess. A hold resolves once: the same capture
    /// again is a replay, anything else [`LedgerError::HoldNotActive`].
    #[tracing::instrument(skip(self, request), fields(organization = %request.organization_id, hold = %request.hold_id))]
    pub async fn capture_hold(&self, request: CaptureRequest) -> Result<HoldCaptured, LedgerError> {
        retrying(|| async {
            // A hold written as ended never comes back: answered without the lock. One
            // only past its TTL goes through the lock, where a capture or release decided
            // before the instant (and not yet committed) is seen.
            let hold = self.stored_hold(&request.hold_id).await?.ok_or(LedgerError::NotFound("credit hold"))?;
            if hold.status != HoldStatus::Active {
                return self.captured_again(&request, hold).await;
            }
            match self.committer.submit(&self.db, &self.events, &self.clock, Op::Capture(request.clone())).await? {
                Done::Captured(captured) => Ok(*captured),
                _ => Err(LedgerError::internal("a capture was answered as another operation")),
            }
        })
        .await
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
        retrying(|| async {
            let hold = self.stored_hold(hold_id).await?.ok_or(LedgerError::NotFound("credit hold"))?;
            match hold.status {
                HoldStatus::Active => {}
                HoldStatus::Captured => return Err(LedgerError::HoldNotActive { status: hold.status.as_str() }),
                HoldStatus::Released | HoldStatus::Expired => return Ok(hold),
            }
            let op = Op::Release { organization_id: organization_id.to_owned(), hold_id: hold_id.to_owned() };
            match self.committer.submit(&self.db, &self.events, &self.clock, op).await? {
                Done::Released(hold, _) => Ok(hold),
                _ => Err(LedgerError::internal("a release was answered as another operation")),
            }
        })
        .await
    }

    /// A hold by id, as of now.
    pub async fn hold(&self, id: &str) -> Result<Option<CreditHold>, LedgerError> {
        match credit_hold::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(row) => Ok(Some(self.hold_of_row(row).await?)),
            None => Ok(None),
        }
    }

    /// A hold by id, as last written (an active hold past its TTL still reads `ACTIVE`).
    async fn stored_hold(&self, id: &str) -> Result<Option<CreditHold>, LedgerError> {
        match credit_hold::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            Some(row) => Ok(Some(self.hold_of_row_as_of(row, DateTime::<Utc>::MIN_UTC).await?)),
            None => Ok(None),
        }
    }

    async fn hold_of_row(&self, row: credit_hold::Model) -> Result<CreditHold, LedgerError> {
        self.hold_of_row_as_of(row, self.now()).await
    }

    async fn hold_of_row_as_of(&self, row: credit_hold::Model, at: DateTime<Utc>) -> Result<CreditHold, LedgerError> {
        let mut allocations = hold_allocations(&self.db, std::slice::from_ref(&row.id)).await?;
        let parts = allocations.remove(&row.id).unwrap_or_default();
        CreditHold::from_row(row, parts, at)
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
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut allocations = hold_allocations(&self.db, &ids).await?;
        let holds: Result<Vec<_>, _> = rows
            .into_iter()
            .map(|row| {
                let parts = allocations.remove(&row.id).unwrap_or_default();
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

/// The reservations of holds, in their order.
pub(super) async fn hold_allocations<C: sea_orm::ConnectionTrait>(
    conn: &C,
    ids: &[String],
) -> Result<HashMap<String, Vec<Allocation>>, LedgerError> {
    let mut found: HashMap<String, Vec<Allocation>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows = credit_hold_allocation::Entity::find()
            .filter(credit_hold_allocation::Column::HoldId.is_in(chunk.iter().cloned()))
            .order_by_asc(credit_hold_allocation::Column::HoldId)
            .order_by_asc(credit_hold_allocation::Column::Position)
            .all(conn)
            .await?;
        for row in rows {
            found.entry(row.hold_id).or_default().push(Allocation { lot_id: row.lot_id, amount: row.amount });
        }
    }
    Ok(found)
}
