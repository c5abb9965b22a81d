//! Auto top-up in GraphQL: `setAutoTopUp`, `Organization.autoTopUp`, `creditTopUps` and
//! the `CreditTopUp` node. Turning it on is the organization's API key's or the admin
//! token's (a client session with `PURCHASE` may too: the console's switch); reading it
//! needs `READ`.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::context::{Access, audited, scope};
use super::errors::ApiError;
use super::pagination::{decode_time_cursor, newest_first_page, page_size};
use super::scalars::{Credits, DateTime};
use super::views::CreditTransaction;
use crate::billing::PackageCatalog;
use crate::ledger::Ledger;
use crate::ledger::topups::{self, AutoTopUpChange, TopUpPackage};

/// A saved card: what it is, nothing more.
#[derive(SimpleObject)]
pub struct SavedPaymentMethod {
    /// `visa`, `mastercard`, …
    brand: Option<String>,
    /// The last four digits.
    last4: Option<String>,
    /// Expiry month.
    exp_month: Option<i32>,
    /// Expiry year.
    exp_year: Option<i32>,
}

/// An organization's auto top-up.
pub struct AutoTopUp(pub topups::AutoTopUp);

#[Object]
impl AutoTopUp {
    /// Whether it is on.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// Below this `available`, a change starts a top-up.
    async fn threshold(&self) -> Option<Credits> {
        self.0.threshold.map(Credits)
    }

    /// The package each top-up buys.
    async fn package_id(&self) -> Option<ID> {
        self.0.package_id.clone().map(ID)
    }

    /// Top-ups started per calendar month (UTC), at most.
    async fn monthly_limit(&self) -> i32 {
        self.0.monthly_limit
    }

    /// Top-ups started this month.
    async fn top_ups_this_month(&self) -> i32 {
        self.0.top_ups_this_month
    }

    /// The saved card.
    async fn payment_method(&self) -> Option<SavedPaymentMethod> {
        self.0.payment_method.as_ref().map(|method| SavedPaymentMethod {
            brand: method.brand.clone(),
            last4: method.last4.clone(),
            exp_month: method.exp_month,
            exp_year: method.exp_year,
        })
    }

    /// Why it is paused (a decline, 3-D Secure): until `setAutoTopUp` or a new card.
    async fn paused_reason(&self) -> Option<&str> {
        self.0.paused_reason.as_deref()
    }
}

/// Where a top-up stands.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "topups::TopUpStatus")]
pub enum CreditTopUpStatus {
    /// Being paid.
    Pending,
    /// Paid and credited.
    Succeeded,
    /// Declined or failed.
    Failed,
    /// Needs the customer (3-D Secure).
    RequiresAction,
}

/// One automatic recharge.
pub struct CreditTopUp(pub topups::CreditTopUp);

#[Object]
impl CreditTopUp {
    /// `ctu_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Whose.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// The package bought.
    async fn package_id(&self) -> ID {
        ID(self.0.package_id.clone())
    }

    /// Where it stands.
    async fn status(&self) -> CreditTopUpStatus {
        self.0.status.into()
    }

    /// Credits it adds (bonus included).
    async fn credits(&self) -> Credits {
        Credits(self.0.credits)
    }

    /// Price in the currency's smallest unit.
    async fn amount(&self) -> i64 {
        self.0.amount
    }

    /// Lower-case ISO 4217 code.
    async fn currency(&self) -> &str {
        &self.0.currency
    }

    /// Its Stripe PaymentIntent.
    async fn payment_intent_id(&self) -> Option<&str> {
        self.0.payment_intent_id.as_deref()
    }

    /// Stripe's message, when it was not paid.
    async fn failure_message(&self) -> Option<&str> {
        if self.0.status == topups::TopUpStatus::Succeeded { None } else { self.0.failure_message.as_deref() }
    }

    /// The `PURCHASE` that credited it.
    async fn transaction(&self, ctx: &Context<'_>) -> Result<Option<CreditTransaction>, ApiError> {
        let Some(id) = &self.0.transaction_id else { return Ok(None) };
        Ok(ctx.data_unchecked::<Ledger>().transaction(id).await?.map(CreditTransaction))
    }

    /// When it was triggered.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Latest change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
}

/// Input of `setAutoTopUp`.
#[derive(InputObject)]
pub struct SetAutoTopUpInput {
    /// The organization; API keys may omit it.
    pub organization_id: Option<ID>,
    /// On or off. On needs a threshold, a package and a saved card.
    pub enabled: bool,
    /// Below this `available`, a change starts a top-up.
    pub threshold: Option<Credits>,
    /// The package each top-up buys.
    pub package_id: Option<ID>,
    /// Top-ups per calendar month (UTC), 1 to 100; 4 at first.
    pub monthly_limit: Option<i32>,
}

/// Top-ups, newest first.
pub type CreditTopUpConnection = Connection<String, CreditTopUp, EmptyFields, EmptyFields>;

/// The organization's auto top-up, for `Organization.autoTopUp`.
pub async fn auto_top_up(ctx: &Context<'_>, organization_id: &str) -> Result<AutoTopUp, ApiError> {
    Ok(AutoTopUp(ctx.data_unchecked::<Ledger>().auto_top_up(organization_id).await?))
}

/// Queries of top-ups.
#[derive(Default)]
pub struct TopUpsQuery;

#[Object]
impl TopUpsQuery {
    /// The organization's top-ups, newest first.
    async fn credit_top_ups(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<CreditTopUpConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let size = page_size("first", first)?;
        let cursor = decode_time_cursor(after)?;
        let ledger = ctx.data_unchecked::<Ledger>();
        ledger.balance(&organization_id).await?;
        let rows = ledger.top_ups(&organization_id, cursor.as_ref(), size + 1).await?;
        Ok(newest_first_page(rows, size, cursor.is_some(), |row| (row.created_at, row.id.clone()), CreditTopUp))
    }
}

/// Mutations of auto top-up.
#[derive(Default)]
pub struct TopUpsMutation;

#[Object]
impl TopUpsMutation {
    /// Turns auto top-up on or off, or changes it; any call lifts a pause. Turning it
    /// on with `available` already below the threshold starts a top-up at once.
    async fn set_auto_top_up(&self, ctx: &Context<'_>, input: SetAutoTopUpInput) -> Result<AutoTopUp, ApiError> {
        let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Purchase)?;
        let package = match &input.package_id {
            Some(id) => {
                let package = ctx
                    .data_unchecked::<PackageCatalog>()
                    .get(id.as_str())
                    .ok_or_else(|| ApiError::BadUserInput(format!("unknown credit package {:?}", id.as_str())))?;
                Some(TopUpPackage {
                    id: package.id.clone(),
                    credits: package.total_credits(),
                    amount: package.price_amount,
                    currency: package.currency.clone(),
                })
            }
            None => None,
        };
        let change = AutoTopUpChange {
            enabled: input.enabled,
            threshold: input.threshold.map(|credits| credits.0),
            package,
            monthly_limit: input.monthly_limit,
        };
        let ledger = &audited(ctx);
        let settings = crate::ledger::retrying(|| async {
            let mut tx = ledger.begin().await?;
            let set = tx.set_auto_top_up(&organization_id, change.clone()).await;
            tx.finish(set).await
        })
        .await?;
        Ok(AutoTopUp(settings))
    }
}
