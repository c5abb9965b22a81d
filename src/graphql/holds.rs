//! Holds: their types, the `creditHolds` query and the `createHold` / `captureHold` /
//! `releaseHold` mutations. Thin: every rule is the ledger's (`ledger/holds.rs`).

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object};

use super::context::{Access, caller, scope};
use super::errors::ApiError;
use super::pagination::{decode_cursor, encode_cursor, page_size};
use super::scalars::{Credits, DateTime};
use super::views::{CreditAllocation, CreditBalance, CreditTransaction};
use crate::ledger::HoldStatus;
use crate::ledger::{self, Amount, CaptureRequest, HoldCursor, HoldFilter, HoldRequest, Ledger};

/// Where a hold is in its life.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CreditHoldStatus {
    /// Reserving credits.
    Active,
    /// Ended by a capture.
    Captured,
    /// Ended by a release.
    Released,
    /// Ended by its TTL.
    Expired,
}

impl From<HoldStatus> for CreditHoldStatus {
    fn from(status: HoldStatus) -> Self {
        match status {
            HoldStatus::Active => Self::Active,
            HoldStatus::Captured => Self::Captured,
            HoldStatus::Released => Self::Released,
            HoldStatus::Expired => Self::Expired,
        }
    }
}

impl From<CreditHoldStatus> for HoldStatus {
    fn from(status: CreditHoldStatus) -> Self {
        match status {
            CreditHoldStatus::Active => Self::Active,
            CreditHoldStatus::Captured => Self::Captured,
            CreditHoldStatus::Released => Self::Released,
            CreditHoldStatus::Expired => Self::Expired,
        }
    }
}

/// Credits reserved for work whose cost is known only when it ends.
pub struct CreditHold(pub ledger::CreditHold);

#[Object]
impl CreditHold {
    /// `hld_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Whose credits.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// Credits reserved.
    async fn amount(&self) -> Credits {
        Credits(self.0.amount)
    }

    /// Credits captured, once captured.
    async fn captured(&self) -> Option<Credits> {
        self.0.captured.map(Credits)
    }

    /// Where it is in its life (as of now: past `expiresAt`, `EXPIRED`).
    async fn status(&self) -> CreditHoldStatus {
        self.0.status.into()
    }

    /// What for.
    async fn description(&self) -> &str {
        &self.0.description
    }

    /// What the work is about.
    async fn reference_type(&self) -> Option<&str> {
        self.0.reference_type.as_deref()
    }

    /// Which one.
    async fn reference_id(&self) -> Option<&str> {
        self.0.reference_id.as_deref()
    }

    /// When it ends by itself unless captured or released.
    async fn expires_at(&self) -> DateTime {
        DateTime(self.0.expires_at)
    }

    /// Where the credits are reserved (a null lot is overdraft).
    async fn allocations(&self) -> Vec<CreditAllocation> {
        self.0.allocations.iter().cloned().map(CreditAllocation).collect()
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Latest change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
}

/// Input of `createHold`.
#[derive(InputObject)]
pub struct CreateHoldInput {
    /// Whose credits; omit with an API key.
    pub organization_id: Option<ID>,
    /// How many to reserve (positive).
    pub amount: Credits,
    /// What for.
    pub description: String,
    /// What the work is about, e.g. `llm_call`.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// Names this operation (one namespace with `consumeCredits`' keys).
    pub idempotency_key: Option<String>,
    /// How long the hold lives unless captured or released: 1 to 86400 (default 900).
    pub ttl_seconds: Option<i32>,
}

/// Input of `captureHold`.
#[derive(InputObject)]
pub struct CaptureHoldInput {
    /// `hld_…`
    pub id: ID,
    /// Credits to capture; the whole hold when omitted.
    pub amount: Option<Credits>,
    /// The transaction's description; the hold's when omitted.
    pub description: Option<String>,
}

/// Result of `createHold`.
pub struct CreateHoldPayload(ledger::HoldCreated);

#[Object]
impl CreateHoldPayload {
    /// The hold (for a replay, the original).
    async fn hold(&self) -> CreditHold {
        CreditHold(self.0.hold.clone())
    }

    /// The balance now.
    async fn balance(&self) -> CreditBalance {
        CreditBalance(self.0.balance.clone())
    }

    /// Whether this answers a retry under the same idempotency key.
    async fn replayed(&self) -> bool {
        self.0.replayed
    }
}

/// Result of `captureHold`.
pub struct CaptureHoldPayload(ledger::HoldCaptured);

#[Object]
impl CaptureHoldPayload {
    /// The hold, captured.
    async fn hold(&self) -> CreditHold {
        CreditHold(self.0.hold.clone())
    }

    /// Its `CONSUMPTION` transaction.
    async fn transaction(&self) -> CreditTransaction {
        CreditTransaction(self.0.transaction.clone())
    }

    /// The balance now.
    async fn balance(&self) -> CreditBalance {
        CreditBalance(self.0.balance.clone())
    }

    /// Whether this answers a repeated capture.
    async fn replayed(&self) -> bool {
        self.0.replayed
    }
}

/// Which holds to list.
#[derive(InputObject, Default)]
pub struct CreditHoldFilter {
    /// Any of these statuses (as of now).
    pub statuses: Option<Vec<CreditHoldStatus>>,
}

/// `totalCount` of a hold connection, counted only when asked for.
pub struct HoldTotals {
    ledger: Ledger,
    organization_id: String,
    filter: HoldFilter,
}

#[Object]
impl HoldTotals {
    /// How many holds match, over all pages.
    async fn total_count(&self) -> Result<i64, ApiError> {
        let count = self.ledger.count_holds(&self.organization_id, &self.filter).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// Holds, newest first, with `totalCount`.
pub type CreditHoldConnection = Connection<String, CreditHold, HoldTotals, EmptyFields>;

fn encode_hold_cursor(hold: &ledger::CreditHold) -> String {
    encode_cursor("hld", &format!("{}/{}", hold.created_at.timestamp_micros(), hold.id))
}

fn decode_hold_cursor(cursor: &str) -> Result<HoldCursor, ApiError> {
    let invalid = || ApiError::BadUserInput(format!("invalid cursor {cursor:?}"));
    let value = decode_cursor("hld", cursor)?;
    let (micros, id) = value.split_once('/').ok_or_else(invalid)?;
    let at = micros.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_micros).ok_or_else(invalid)?;
    Ok((at, id.to_owned()))
}

/// Queries about holds.
#[derive(Default)]
pub struct HoldsQuery;

#[Object]
impl HoldsQuery {
    /// The organization's holds, newest first (Relay connection).
    async fn credit_holds(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<CreditHoldFilter>,
    ) -> Result<CreditHoldConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let count = page_size("first", first)?;
        let after = after.as_deref().map(decode_hold_cursor).transpose()?;
        let filter = HoldFilter {
            statuses: filter
                .unwrap_or_default()
                .statuses
                .map(|statuses| statuses.into_iter().map(Into::into).collect()),
        };
        let ledger = ctx.data_unchecked::<Ledger>();
        ledger.balance(&organization_id).await?;
        let has_previous = after.is_some();
        let (holds, has_next) = ledger.holds(&organization_id, &filter, count, after).await?;
        let totals = HoldTotals { ledger: ledger.clone(), organization_id, filter };
        let mut connection = Connection::with_additional_fields(has_previous, has_next, totals);
        connection.edges.extend(holds.into_iter().map(|hold| Edge::new(encode_hold_cursor(&hold), CreditHold(hold))));
        Ok(connection)
    }
}

/// The organization of hold `id`, if the caller may capture or release it (scope
/// `CONSUME` for a client session); another organization's hold is not found, never
/// forbidden.
async fn own_hold(ctx: &Context<'_>, id: &ID) -> Result<String, ApiError> {
    let caller = caller(ctx);
    caller.require_any()?;
    let ledger = ctx.data_unchecked::<Ledger>();
    let organization_id = ledger.hold_organization(id.as_str()).await?.ok_or(ApiError::NotFound("credit hold"))?;
    let visible = matches!(caller, super::Caller::Admin) || caller.organization_id() == Some(&organization_id);
    if !visible {
        return Err(ApiError::NotFound("credit hold"));
    }
    scope(ctx, Some(&ID(organization_id)), Access::Consume)
}

/// Mutations of holds.
#[derive(Default)]
pub struct HoldsMutation;

#[Object]
impl HoldsMutation {
    /// Reserves credits (lots in draw order, then overdraft) for work whose cost is known
    /// only at its end, if spendable (else `INSUFFICIENT_CREDITS`). The balance does not
    /// change; `held` rises and `available` falls. With `idempotencyKey`, retries return
    /// the original.
    async fn create_hold(&self, ctx: &Context<'_>, input: CreateHoldInput) -> Result<CreateHoldPayload, ApiError> {
        let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Consume)?;
        let request = HoldRequest::new(
            organization_id,
            Amount::parse(input.amount.0)?,
            input.description,
            input.reference_type,
            input.reference_id,
            input.idempotency_key,
            input.ttl_seconds.map(i64::from),
        )?;
        Ok(CreateHoldPayload(ctx.data_unchecked::<Ledger>().create_hold(request).await?))
    }

    /// Ends a hold with one `CONSUMPTION` (with `holdId`) of `amount` (default the whole
    /// hold): less releases the rest, more draws the excess or fails with
    /// `INSUFFICIENT_CREDITS`, the hold staying active. The same capture again is a
    /// replay; anything else on an ended hold is `HOLD_NOT_ACTIVE`.
    async fn capture_hold(&self, ctx: &Context<'_>, input: CaptureHoldInput) -> Result<CaptureHoldPayload, ApiError> {
        let organization_id = own_hold(ctx, &input.id).await?;
        let amount = input.amount.map(|amount| Amount::parse(amount.0)).transpose()?;
        let request = CaptureRequest::new(organization_id, input.id.to_string(), amount, input.description)?
            .by(caller(ctx).actor());
        Ok(CaptureHoldPayload(ctx.data_unchecked::<Ledger>().capture_hold(request).await?))
    }

    /// Ends a hold without capturing: its credits are available again. A released or
    /// expired hold is returned unchanged; a captured one is `HOLD_NOT_ACTIVE`.
    async fn release_hold(&self, ctx: &Context<'_>, id: ID) -> Result<CreditHold, ApiError> {
        let organization_id = own_hold(ctx, &id).await?;
        let released = ctx.data_unchecked::<Ledger>().release_hold(&organization_id, id.as_str()).await?;
        Ok(CreditHold(released))
    }
}
