//! Lots and overdraft (holds join them here): their types, the `creditLots` query and
//! the `voidCreditLot` / `setOverdraftLimit` mutations.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::context::{Access, caller, scope};
use super::errors::ApiError;
use super::guards::LeadsElsewhere;
use super::ledger::{CreditBalance, CreditTransaction};
use super::loaders::{LotLoader, TransactionLoader};
use super::pagination::{decode_cursor, encode_cursor, page_size};
use super::scalars::{Credits, DateTime};
use crate::ledger::decide::{self, LotCategory, LotStatus};
use crate::ledger::{self, Ledger, LotFilter};

/// Paid or promotional credits.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CreditCategory {
    /// Bought.
    Paid,
    /// Given.
    Promotional,
}

impl From<LotCategory> for CreditCategory {
    fn from(category: LotCategory) -> Self {
        match category {
            LotCategory::Paid => Self::Paid,
            LotCategory::Promotional => Self::Promotional,
        }
    }
}

impl From<CreditCategory> for LotCategory {
    fn from(category: CreditCategory) -> Self {
        match category {
            CreditCategory::Paid => Self::Paid,
            CreditCategory::Promotional => Self::Promotional,
        }
    }
}

/// Where a lot is in its life.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CreditLotStatus {
    /// Drawable while it has unheld credits.
    Active,
    /// Emptied by consumption or clawback.
    Depleted,
    /// Past its expiry; only held credits remain.
    Expired,
    /// Voided; only held credits remain.
    Voided,
}

impl From<LotStatus> for CreditLotStatus {
    fn from(status: LotStatus) -> Self {
        match status {
            LotStatus::Active => Self::Active,
            LotStatus::Depleted => Self::Depleted,
            LotStatus::Expired => Self::Expired,
            LotStatus::Voided => Self::Voided,
        }
    }
}

impl From<CreditLotStatus> for LotStatus {
    fn from(status: CreditLotStatus) -> Self {
        match status {
            CreditLotStatus::Active => Self::Active,
            CreditLotStatus::Depleted => Self::Depleted,
            CreditLotStatus::Expired => Self::Expired,
            CreditLotStatus::Voided => Self::Voided,
        }
    }
}

/// Credits that entered a balance together (a grant, a purchase, an adjustment).
pub struct CreditLot(pub ledger::CreditLot);

#[Object]
impl CreditLot {
    /// `lot_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Whose.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// Paid or promotional.
    async fn category(&self) -> CreditCategory {
        self.0.category.into()
    }

    /// 0–100; lower is drawn first.
    async fn priority(&self) -> i32 {
        self.0.priority
    }

    /// Credits it was created with.
    async fn original(&self) -> Credits {
        Credits(self.0.original)
    }

    /// Credits still in it, held ones included.
    async fn remaining(&self) -> Credits {
        Credits(self.0.remaining)
    }

    /// The part of `remaining` reserved by active holds.
    async fn held(&self) -> Credits {
        Credits(self.0.held)
    }

    /// When it became spendable (its creation, in this version).
    async fn effective_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// When its unheld remainder expires; never when null.
    async fn expires_at(&self) -> Option<DateTime> {
        self.0.expires_at.map(DateTime)
    }

    /// Where it is in its life (as of now).
    async fn status(&self) -> CreditLotStatus {
        self.0.status.into()
    }

    /// The transaction that created it.
    #[graphql(guard = "LeadsElsewhere")]
    async fn source(&self, ctx: &Context<'_>) -> Result<CreditTransaction, ApiError> {
        ctx.data_unchecked::<DataLoader<TransactionLoader>>()
            .load_one(self.0.source_transaction_id.clone())
            .await?
            .map(CreditTransaction)
            .ok_or(ApiError::NotFound("credit transaction"))
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// The part of a transaction or hold that changed one lot; a null lot is overdraft debt.
pub struct CreditAllocation(pub decide::Allocation);

#[Object]
impl CreditAllocation {
    /// The lot, or null for overdraft debt.
    #[graphql(guard = "LeadsElsewhere")]
    async fn lot(&self, ctx: &Context<'_>) -> Result<Option<CreditLot>, ApiError> {
        let Some(lot_id) = &self.0.lot_id else { return Ok(None) };
        Ok(ctx.data_unchecked::<DataLoader<LotLoader>>().load_one(lot_id.clone()).await?.map(CreditLot))
    }

    /// With the transaction's sign.
    async fn amount(&self) -> Credits {
        Credits(self.0.amount)
    }
}

/// Credits that will expire at one instant.
#[derive(SimpleObject)]
pub struct CreditExpiration {
    /// When.
    pub at: DateTime,
    /// How many (unheld, of active lots).
    pub amount: Credits,
}

/// The next expiration of an organization's credits, as of now.
pub async fn next_expiration(ctx: &Context<'_>, organization_id: &str) -> Result<Option<CreditExpiration>, ApiError> {
    let state = ctx.data_unchecked::<Ledger>().settled_state(organization_id).await?;
    Ok(state.next_expiration().map(|(at, amount)| CreditExpiration { at: DateTime(at), amount: Credits(amount) }))
}

/// Which lots to list.
#[derive(InputObject, Default)]
pub struct CreditLotFilter {
    /// Any of these statuses.
    pub statuses: Option<Vec<CreditLotStatus>>,
    /// Any of these categories.
    pub categories: Option<Vec<CreditCategory>>,
}

impl From<CreditLotFilter> for LotFilter {
    fn from(filter: CreditLotFilter) -> Self {
        Self {
            statuses: filter.statuses.map(|statuses| statuses.into_iter().map(Into::into).collect()),
            categories: filter.categories.map(|categories| categories.into_iter().map(Into::into).collect()),
        }
    }
}

/// `totalCount` of a lot connection, counted only when asked for.
pub struct LotTotals {
    ledger: Ledger,
    organization_id: String,
    filter: LotFilter,
}

#[Object]
impl LotTotals {
    /// How many lots match, over all pages.
    async fn total_count(&self) -> Result<i64, ApiError> {
        let count = self.ledger.count_lots(&self.organization_id, &self.filter).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// Lots, newest first, with `totalCount`.
pub type CreditLotConnection = Connection<String, CreditLot, LotTotals, EmptyFields>;

/// Queries about lots.
#[derive(Default)]
pub struct LotsQuery;

#[Object]
impl LotsQuery {
    /// The organization's credit lots, newest first (Relay connection).
    async fn credit_lots(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<CreditLotFilter>,
    ) -> Result<CreditLotConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let count = page_size("first", first)?;
        let after = after
            .map(|cursor| {
                decode_cursor("lot", &cursor)?
                    .parse::<i64>()
                    .map_err(|_| ApiError::BadUserInput(format!("invalid cursor {cursor:?}")))
            })
            .transpose()?;
        let filter = LotFilter::from(filter.unwrap_or_default());
        let ledger = ctx.data_unchecked::<Ledger>();
        ledger.balance(&organization_id).await?;
        let (lots, has_next) = ledger.lots(&organization_id, &filter, count, after).await?;
        let totals = LotTotals { ledger: ledger.clone(), organization_id, filter };
        let mut connection = Connection::with_additional_fields(after.is_some(), has_next, totals);
        connection
            .edges
            .extend(lots.into_iter().map(|lot| Edge::new(encode_cursor("lot", &lot.seq.to_string()), CreditLot(lot))));
        Ok(connection)
    }
}

/// Result of `voidCreditLot`.
#[derive(SimpleObject)]
pub struct VoidCreditLotPayload {
    /// The lot after.
    pub lot: CreditLot,
    /// The `VOID` transaction; null when nothing was left to void (or it was voided before).
    pub transaction: Option<CreditTransaction>,
    /// The balance now.
    pub balance: CreditBalance,
}

/// Mutations of lots and the overdraft.
#[derive(Default)]
pub struct LotsMutation;

#[Object]
impl LotsMutation {
    /// Removes a lot's unheld remainder as a `VOID` transaction (a mistaken grant); the
    /// lot is never drawn again. Voiding a voided lot changes nothing. Admin only.
    async fn void_credit_lot(
        &self,
        ctx: &Context<'_>,
        id: ID,
        description: String,
    ) -> Result<VoidCreditLotPayload, ApiError> {
        caller(ctx).require_admin()?;
        let (lot, transaction, balance) = ctx.data_unchecked::<Ledger>().void_lot(id.as_str(), &description).await?;
        Ok(VoidCreditLotPayload {
            lot: CreditLot(lot),
            transaction: transaction.map(CreditTransaction),
            balance: CreditBalance(balance),
        })
    }

    /// Lets the organization's balance go down to `−limit`. A limit below the current
    /// debt is refused (`BAD_USER_INPUT` with `debt`). Admin only.
    async fn set_overdraft_limit(
        &self,
        ctx: &Context<'_>,
        organization_id: ID,
        limit: Credits,
    ) -> Result<CreditBalance, ApiError> {
        caller(ctx).require_admin()?;
        let balance = ctx.data_unchecked::<Ledger>().set_overdraft_limit(organization_id.as_str(), limit.0).await?;
        Ok(CreditBalance(balance))
    }
}
