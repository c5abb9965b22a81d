//! The ledger in GraphQL: organizations, balances and their transactions; the
//! `creditBalance` / `creditTransactions` / `organization` queries and the
//! `consumeCredits` / `grantCredits` / `setLowBalanceThreshold` / `createOrganization`
//! mutations. Types are thin views over domain values, never over database rows.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::context::{Access, audited, caller, scope};
use super::errors::ApiError;
use super::loaders::Loaders;
use super::pagination::{encode_cursor, transaction_page};
use super::scalars::{Credits, DateTime};
use super::views::{CreditBalance, CreditCategory, CreditLot, CreditTransaction, CreditTransactionKind, Organization};
use crate::ledger::{self, Amount, ConsumeRequest, GrantRequest, Ledger, TransactionFilter, TransactionKind};
use crate::metrics::ConsumeOutcome;

/// Which transactions to list; every condition given must hold.
#[derive(InputObject, Default)]
pub struct CreditTransactionFilter {
    /// Any of these kinds.
    pub kinds: Option<Vec<CreditTransactionKind>>,
    /// Exactly this reference type.
    pub reference_type: Option<String>,
    /// Exactly this reference id.
    pub reference_id: Option<String>,
    /// Created strictly after.
    pub created_after: Option<DateTime>,
    /// Created strictly before.
    pub created_before: Option<DateTime>,
}

impl From<CreditTransactionFilter> for TransactionFilter {
    fn from(filter: CreditTransactionFilter) -> Self {
        Self {
            kinds: filter.kinds.map(|kinds| kinds.into_iter().map(TransactionKind::from).collect()),
            reference_type: filter.reference_type,
            reference_id: filter.reference_id,
            created_after: filter.created_after.map(|time| time.0),
            created_before: filter.created_before.map(|time| time.0),
        }
    }
}

/// Connection fields computed only when asked for.
pub struct TransactionTotals {
    pub(crate) ledger: Ledger,
    pub(crate) organization_id: String,
    pub(crate) filter: TransactionFilter,
}

#[Object]
impl TransactionTotals {
    /// How many transactions match the filter, across all pages.
    async fn total_count(&self) -> Result<i64, ApiError> {
        let count = self.ledger.count_transactions(&self.organization_id, &self.filter).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// Input of `consumeCredits`.
#[derive(InputObject)]
pub struct ConsumeCreditsInput {
    /// Whose credits; omit with an API key.
    pub organization_id: Option<ID>,
    /// How many (positive).
    pub amount: Credits,
    /// What for, e.g. `AI Image Generation`.
    pub description: String,
    /// What the usage is about, e.g. `ai_image`.
    pub reference_type: Option<String>,
    /// Which one, e.g. the image id.
    pub reference_id: Option<String>,
    /// Names this operation: a retry with the same key is answered with the original.
    pub idempotency_key: Option<String>,
}

/// Marks the payload of `consumeCredits`.
pub struct Consume;

/// Result of a balance change: `ConsumeCreditsPayload`.
#[derive(SimpleObject)]
#[graphql(concrete(name = "ConsumeCreditsPayload", params(Consume)))]
pub struct BalanceChangePayload<Op: Send + Sync + 'static> {
    /// The transaction written (for a replay, the original one).
    pub transaction: CreditTransaction,
    /// The balance now.
    pub balance: CreditBalance,
    /// Whether this answers a retry under the same idempotency key.
    pub replayed: bool,
    #[graphql(skip)]
    pub operation: std::marker::PhantomData<Op>,
}

impl<Op: Send + Sync + 'static> From<ledger::Applied> for BalanceChangePayload<Op> {
    fn from(applied: ledger::Applied) -> Self {
        Self {
            transaction: CreditTransaction(applied.transaction),
            balance: CreditBalance(applied.balance),
            replayed: applied.replayed,
            operation: std::marker::PhantomData,
        }
    }
}

/// Input of `grantCredits`.
#[derive(InputObject)]
pub struct GrantCreditsInput {
    /// To whom.
    pub organization_id: ID,
    /// How many (positive).
    pub amount: Credits,
    /// Why.
    pub description: String,
    /// Names this operation: a retry with the same key is answered with the original.
    pub idempotency_key: Option<String>,
    /// The lot's category (default `PROMOTIONAL`).
    pub category: Option<CreditCategory>,
    /// The lot's priority, 0–100, lower drawn first (default 50).
    pub priority: Option<i32>,
    /// When the lot's unheld remainder expires (in the future); never when omitted.
    pub expires_at: Option<DateTime>,
}

/// Result of `grantCredits`.
pub struct GrantCreditsPayload(pub ledger::Applied);

#[Object]
impl GrantCreditsPayload {
    /// The transaction written (for a replay, the original one).
    async fn transaction(&self) -> CreditTransaction {
        CreditTransaction(self.0.transaction.clone())
    }

    /// The balance now.
    async fn balance(&self) -> CreditBalance {
        CreditBalance(self.0.balance.clone())
    }

    /// Whether this answers a retry under the same idempotency key.
    async fn replayed(&self) -> bool {
        self.0.replayed
    }

    /// The lot formed; null only for a replay of a grant from before lots.
    async fn lot(&self, ctx: &Context<'_>) -> Result<Option<CreditLot>, ApiError> {
        let Some(lot_id) = &self.0.lot else { return Ok(None) };
        Ok(ctx.data_unchecked::<Loaders>().lots().load_one(lot_id.clone()).await?.map(CreditLot))
    }
}

/// Input of `createOrganization`.
#[derive(InputObject)]
pub struct CreateOrganizationInput {
    /// Display name.
    pub name: String,
    /// Default low-balance threshold.
    pub low_balance_threshold: Option<Credits>,
}

/// Transactions, newest first, with `totalCount`.
pub type CreditTransactionConnection = Connection<String, CreditTransaction, TransactionTotals, EmptyFields>;

/// Queries of balances, transaction history and organizations.
#[derive(Default)]
pub struct LedgerQuery;

#[Object]
impl LedgerQuery {
    /// The organization's current balance. API keys may omit `organizationId`.
    async fn credit_balance(&self, ctx: &Context<'_>, organization_id: Option<ID>) -> Result<CreditBalance, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        Ok(CreditBalance(ctx.data_unchecked::<Ledger>().balance(&organization_id).await?))
    }

    /// The organization's transactions, newest first (Relay connection).
    // The contract fixes these arguments; each is a GraphQL argument, not a Rust design choice.
    #[allow(clippy::too_many_arguments)]
    async fn credit_transactions(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        filter: Option<CreditTransactionFilter>,
    ) -> Result<CreditTransactionConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let page = transaction_page(first, after, last, before)?;
        let filter = TransactionFilter::from(filter.unwrap_or_default());
        let ledger = ctx.data_unchecked::<Ledger>();
        // Distinguish "no such organization" from "no transactions yet".
        ledger.balance(&organization_id).await?;
        let page = ledger.transactions(&organization_id, &filter, page).await?;
        let totals = TransactionTotals { ledger: ledger.clone(), organization_id, filter };
        let mut connection = Connection::with_additional_fields(page.has_previous, page.has_next, totals);
        connection.edges.extend(page.items.into_iter().map(|transaction| {
            Edge::new(encode_cursor("seq", &transaction.seq.to_string()), CreditTransaction(transaction))
        }));
        Ok(connection)
    }

    /// An organization. API keys may omit `id` to get their own.
    async fn organization(&self, ctx: &Context<'_>, id: Option<ID>) -> Result<Organization, ApiError> {
        let organization_id = scope(ctx, id.as_ref(), Access::Read)?;
        ctx.data_unchecked::<Ledger>()
            .organization(&organization_id)
            .await?
            .map(Organization)
            .ok_or(ApiError::NotFound("organization"))
    }
}

/// Mutations of balances and organizations.
#[derive(Default)]
pub struct LedgerMutation;

#[Object]
impl LedgerMutation {
    /// Deducts credits, atomically: succeeds in full or changes nothing, and never takes
    /// the balance below zero. With `idempotencyKey`, retries return the original.
    async fn consume_credits(
        &self,
        ctx: &Context<'_>,
        input: ConsumeCreditsInput,
    ) -> Result<BalanceChangePayload<Consume>, ApiError> {
        // Every request is counted, a refused one too.
        let consumed = async {
            let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Consume)?;
            let request = ConsumeRequest::new(
                organization_id,
                Amount::parse(input.amount.0)?,
                input.description,
                input.reference_type,
                input.reference_id,
                input.idempotency_key,
            )?
            .by(caller(ctx).actor());
            Ok::<_, ApiError>(ctx.data_unchecked::<Ledger>().consume(request).await?)
        }
        .await;
        crate::metrics::consumption(match &consumed {
            Ok(applied) if applied.replayed => ConsumeOutcome::Replayed,
            Ok(_) => ConsumeOutcome::Succeeded,
            Err(ApiError::InsufficientCredits { .. }) => ConsumeOutcome::InsufficientCredits,
            Err(ApiError::IdempotencyConflict) => ConsumeOutcome::Conflict,
            Err(_) => ConsumeOutcome::Failed,
        });
        Ok(consumed?.into())
    }

    /// Adds credits to an organization as a `GRANT`, forming a lot (default: promotional,
    /// priority 50, no expiry); any overdraft debt is paid first. Admin only.
    async fn grant_credits(
        &self,
        ctx: &Context<'_>,
        input: GrantCreditsInput,
    ) -> Result<GrantCreditsPayload, ApiError> {
        caller(ctx).require_admin()?;
        let organization_id = scope(ctx, Some(&input.organization_id), Access::Manage)?;
        let ledger = audited(ctx);
        let request = GrantRequest::new(
            organization_id,
            Amount::parse(input.amount.0)?,
            input.description,
            input.idempotency_key,
        )?
        .with_lot(
            input.category.map(Into::into),
            input.priority,
            input.expires_at.map(|at| at.0),
            ledger.now(),
        )?;
        Ok(GrantCreditsPayload(ledger.grant(request).await?))
    }

    /// Sets the organization's low-balance threshold; null clears it.
    async fn set_low_balance_threshold(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        threshold: Option<Credits>,
    ) -> Result<CreditBalance, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Manage)?;
        let (_, balance) =
            audited(ctx).set_low_balance_threshold(&organization_id, threshold.map(|credits| credits.0)).await?;
        Ok(CreditBalance(balance))
    }

    /// Creates an organization with a zero balance. Admin only.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        input: CreateOrganizationInput,
    ) -> Result<Organization, ApiError> {
        caller(ctx).require_admin()?;
        let ledger = audited(ctx);
        let organization =
            ledger.create_organization(&input.name, input.low_balance_threshold.map(|credits| credits.0)).await?;
        Ok(Organization(organization))
    }
}
