//! The ledger's object views: organizations, balances, transactions, lots and their
//! allocations. They lead to one another (a transaction to its allocations' lots, a lot
//! to its source transaction), so they live in one file; the operations that return them
//! live in one file per area (`ledger.rs`, `lots.rs`, `holds.rs`).

use async_graphql::{Context, Enum, ID, Object, SimpleObject};

use super::errors::ApiError;
use super::guards::LeadsElsewhere;
use super::loaders::Loaders;
use super::scalars::{Credits, DateTime};
use crate::ledger::{self, Allocation, Ledger, LotCategory, LotStatus, TransactionKind};

async fn load_organization(ctx: &Context<'_>, id: &str) -> Result<ledger::Organization, ApiError> {
    ctx.data_unchecked::<Loaders>()
        .organizations()
        .load_one(id.to_owned())
        .await?
        .ok_or(ApiError::NotFound("organization"))
}

async fn load_balance(ctx: &Context<'_>, organization_id: &str) -> Result<ledger::Balance, ApiError> {
    ctx.data_unchecked::<Loaders>()
        .balances()
        .load_one(organization_id.to_owned())
        .await?
        .ok_or(ApiError::NotFound("organization"))
}

/// A tenant: holds one credit balance.
pub struct Organization(pub ledger::Organization);

#[Object]
impl Organization {
    /// `org_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Default threshold below which the balance counts as low.
    async fn low_balance_threshold(&self) -> Option<Credits> {
        self.0.low_balance_threshold.map(Credits)
    }

    /// The organization's credit balance.
    async fn balance(&self, ctx: &Context<'_>) -> Result<CreditBalance, ApiError> {
        load_balance(ctx, &self.0.id).await.map(CreditBalance)
    }

    /// Its auto top-up (off until set up).
    async fn auto_top_up(&self, ctx: &Context<'_>) -> Result<super::topups::AutoTopUp, ApiError> {
        super::topups::auto_top_up(ctx, &self.0.id).await
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// An organization's balance. Its id is stable, so client caches merge updates.
pub struct CreditBalance(pub ledger::Balance);

#[Object]
impl CreditBalance {
    /// `bal_…`, stable per organization.
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The owning organization's id.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// The sum of the organization's transactions.
    async fn balance(&self) -> Credits {
        Credits(self.0.balance)
    }

    /// `balance − held`, minus any expired remainder not yet written.
    async fn available(&self) -> Credits {
        Credits(self.0.available)
    }

    /// Credits reserved by active holds.
    async fn held(&self) -> Credits {
        Credits(self.0.held)
    }

    /// How far below zero the balance may go.
    async fn overdraft_limit(&self) -> Credits {
        Credits(self.0.overdraft_limit)
    }

    /// What a consume or hold may take now: `available + overdraftLimit`.
    async fn spendable(&self) -> Credits {
        Credits(self.0.spendable())
    }

    /// The soonest future expiry among active lots and the unheld credits expiring then.
    async fn next_expiration(&self, ctx: &Context<'_>) -> Result<Option<CreditExpiration>, ApiError> {
        next_expiration(ctx, &self.0.organization_id).await
    }

    /// The organization's low-balance threshold.
    async fn low_balance_threshold(&self, ctx: &Context<'_>) -> Result<Option<Credits>, ApiError> {
        Ok(load_organization(ctx, &self.0.organization_id).await?.low_balance_threshold.map(Credits))
    }

    /// Whether `available` is below the organization's threshold (false when none is set).
    async fn is_low(&self, ctx: &Context<'_>) -> Result<bool, ApiError> {
        let threshold = load_organization(ctx, &self.0.organization_id).await?.low_balance_threshold;
        Ok(threshold.is_some_and(|threshold| self.0.available < threshold))
    }

    /// Time of the latest change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }

    /// The owning organization.
    #[graphql(guard = "LeadsElsewhere")]
    async fn organization(&self, ctx: &Context<'_>) -> Result<Organization, ApiError> {
        load_organization(ctx, &self.0.organization_id).await.map(Organization)
    }
}

/// Why a balance changed.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditTransactionKind {
    /// A paid credit package.
    Purchase,
    /// Usage of a paid feature.
    Consumption,
    /// Credits granted by an operator.
    Grant,
    /// Credits taken back after a refund.
    Refund,
    /// A correction.
    Adjustment,
    /// A lot's unheld remainder, gone at its expiry.
    Expiry,
    /// A voided lot's unheld remainder.
    Void,
}

impl From<TransactionKind> for CreditTransactionKind {
    fn from(kind: TransactionKind) -> Self {
        match kind {
            TransactionKind::Purchase => Self::Purchase,
            TransactionKind::Consumption => Self::Consumption,
            TransactionKind::Grant => Self::Grant,
            TransactionKind::Refund => Self::Refund,
            TransactionKind::Adjustment => Self::Adjustment,
            TransactionKind::Expiry => Self::Expiry,
            TransactionKind::Void => Self::Void,
        }
    }
}

impl From<CreditTransactionKind> for TransactionKind {
    fn from(kind: CreditTransactionKind) -> Self {
        match kind {
            CreditTransactionKind::Purchase => Self::Purchase,
            CreditTransactionKind::Consumption => Self::Consumption,
            CreditTransactionKind::Grant => Self::Grant,
            CreditTransactionKind::Refund => Self::Refund,
            CreditTransactionKind::Adjustment => Self::Adjustment,
            CreditTransactionKind::Expiry => Self::Expiry,
            CreditTransactionKind::Void => Self::Void,
        }
    }
}

/// One immutable change of an organization's balance.
pub struct CreditTransaction(pub ledger::CreditTransaction);

#[Object]
impl CreditTransaction {
    /// `ctx_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The organization whose balance changed.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// Why.
    async fn kind(&self) -> CreditTransactionKind {
        self.0.kind.into()
    }

    /// Signed change: negative for `CONSUMPTION` and `REFUND`.
    async fn amount(&self) -> Credits {
        Credits(self.0.amount)
    }

    /// The balance right after this transaction.
    async fn balance_after(&self) -> Credits {
        Credits(self.0.balance_after)
    }

    /// Reason given.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    /// What the change is about, e.g. `ai_image`.
    async fn reference_type(&self) -> Option<&str> {
        self.0.reference_type.as_deref()
    }

    /// Which one of those.
    async fn reference_id(&self) -> Option<&str> {
        self.0.reference_id.as_deref()
    }

    /// The idempotency key it was made under.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }

    /// The lots it changed, summing to `amount` (a null lot is overdraft debt).
    async fn allocations(&self) -> Vec<CreditAllocation> {
        self.0.allocations.iter().cloned().map(CreditAllocation).collect()
    }

    /// The hold a capture ended.
    async fn hold_id(&self) -> Option<ID> {
        self.0.hold_id.clone().map(ID)
    }

    /// The API key that made it (used directly, or the key that minted the client
    /// session); null for the admin token, Stripe and the ledger's own entries.
    async fn api_key_id(&self) -> Option<ID> {
        self.0.api_key_id.clone().map(ID)
    }

    /// The client session that made it.
    async fn client_session_id(&self) -> Option<ID> {
        self.0.client_session_id.clone().map(ID)
    }

    /// Commit time (for an expiry, the lot's expiry instant).
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// The organization whose balance changed.
    #[graphql(guard = "LeadsElsewhere")]
    async fn organization(&self, ctx: &Context<'_>) -> Result<Organization, ApiError> {
        load_organization(ctx, &self.0.organization_id).await.map(Organization)
    }
}

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
        ctx.data_unchecked::<Loaders>()
            .transactions()
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
pub struct CreditAllocation(pub Allocation);

#[Object]
impl CreditAllocation {
    /// The lot, or null for overdraft debt.
    #[graphql(guard = "LeadsElsewhere")]
    async fn lot(&self, ctx: &Context<'_>) -> Result<Option<CreditLot>, ApiError> {
        let Some(lot_id) = &self.0.lot_id else { return Ok(None) };
        Ok(ctx.data_unchecked::<Loaders>().lots().load_one(lot_id.clone()).await?.map(CreditLot))
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
    let next = ctx.data_unchecked::<Ledger>().next_expiration(organization_id).await?;
    Ok(next.map(|(at, amount)| CreditExpiration { at: DateTime(at), amount: Credits(amount) }))
}
