//! Billing in GraphQL: credit packages and Stripe Checkout purchases; the
//! `creditPurchases` / `creditPackages` queries and the `purchasePackage` mutation.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};

use super::context::{Access, scope};
use super::errors::ApiError;
use super::pagination::{decode_cursor, encode_cursor, page_size};
use super::scalars::{Credits, DateTime};
use crate::billing::{self, Billing, PackageCatalog, Purchases};
use crate::ledger::Ledger;

/// A credit package on sale.
pub struct CreditPackage(pub billing::CreditPackage);

#[Object]
impl CreditPackage {
    /// Chosen in the package file, e.g. `credits_basic`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Credits bought.
    async fn credits(&self) -> Credits {
        Credits(self.0.credits)
    }

    /// Credits added free on top.
    async fn bonus_credits(&self) -> Credits {
        Credits(self.0.bonus_credits)
    }

    /// Credits plus bonus.
    async fn total_credits(&self) -> Credits {
        Credits(self.0.total_credits())
    }

    /// Price in the currency's smallest unit (cents).
    async fn price_amount(&self) -> i32 {
        i32::try_from(self.0.price_amount).unwrap_or(i32::MAX)
    }

    /// Lower-case ISO currency code.
    async fn currency(&self) -> &str {
        &self.0.currency
    }
}

/// Where a purchase stands.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditPurchaseStatus {
    /// Checkout started, not paid yet.
    Pending,
    /// Paid; credits added.
    Paid,
    /// Payment failed.
    Failed,
    /// Checkout expired unpaid.
    Expired,
    /// Refunded in full.
    Refunded,
    /// Refunded in part.
    PartiallyRefunded,
    /// Disputed by the buyer: Stripe withdrew the funds, the disputed credits were taken back.
    Disputed,
}

impl From<billing::PurchaseStatus> for CreditPurchaseStatus {
    fn from(status: billing::PurchaseStatus) -> Self {
        use billing::PurchaseStatus as Status;
        match status {
            Status::Pending => Self::Pending,
            Status::Paid => Self::Paid,
            Status::Failed => Self::Failed,
            Status::Expired => Self::Expired,
            Status::Refunded => Self::Refunded,
            Status::PartiallyRefunded => Self::PartiallyRefunded,
            Status::Disputed => Self::Disputed,
        }
    }
}

/// A purchase of a credit package through Stripe Checkout.
pub struct CreditPurchase(pub billing::CreditPurchase);

#[Object]
impl CreditPurchase {
    /// `pur_…`
    pub(super) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The buyer.
    async fn organization_id(&self) -> ID {
        ID(self.0.organization_id.clone())
    }

    /// The package bought.
    async fn package_id(&self) -> ID {
        ID(self.0.package_id.clone())
    }

    /// Where the purchase stands.
    async fn status(&self) -> CreditPurchaseStatus {
        self.0.status.into()
    }

    /// Credits the purchase adds.
    async fn credits(&self) -> Credits {
        Credits(self.0.credits)
    }

    /// Price paid in the currency's smallest unit.
    async fn amount(&self) -> i32 {
        i32::try_from(self.0.amount).unwrap_or(i32::MAX)
    }

    /// Currency code.
    async fn currency(&self) -> &str {
        &self.0.currency
    }

    /// Stripe Checkout Session id.
    async fn checkout_session_id(&self) -> &str {
        &self.0.checkout_session_id
    }

    /// Creation time.
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Latest status change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
}

/// Connection fields of purchases, computed only when asked for.
pub struct PurchaseTotals {
    pub(crate) purchases: billing::Purchases,
    pub(crate) organization_id: String,
}

#[Object]
impl PurchaseTotals {
    /// How many purchases the organization has.
    async fn total_count(&self) -> Result<i64, ApiError> {
        let count = self.purchases.count(&self.organization_id).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// Input of `purchasePackage`.
#[derive(InputObject)]
pub struct PurchasePackageInput {
    /// The buyer; omit with an API key.
    pub organization_id: Option<ID>,
    /// The credit package to buy.
    pub package_id: ID,
    /// Where Checkout sends the buyer after paying (else the server's default).
    pub success_url: Option<String>,
    /// Where Checkout sends the buyer after cancelling (else the server's default).
    pub cancel_url: Option<String>,
    /// Keep the card for auto top-up: once paid, it becomes the organization's.
    pub save_for_auto_top_up: Option<bool>,
}

/// Result of `purchasePackage`: send the buyer to `checkoutUrl`.
#[derive(SimpleObject)]
pub struct PurchasePackagePayload {
    /// The pending purchase.
    pub purchase: CreditPurchase,
    /// Stripe Checkout Session id.
    pub checkout_session_id: String,
    /// The hosted Checkout page.
    pub checkout_url: String,
}

/// Purchases, newest first, with `totalCount`.
pub type CreditPurchaseConnection = Connection<String, CreditPurchase, PurchaseTotals, EmptyFields>;

/// Queries of purchases and the packages on sale.
#[derive(Default)]
pub struct BillingQuery;

#[Object]
impl BillingQuery {
    /// The organization's credit purchases, newest first.
    async fn credit_purchases(
        &self,
        ctx: &Context<'_>,
        organization_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<CreditPurchaseConnection, ApiError> {
        let organization_id = scope(ctx, organization_id.as_ref(), Access::Read)?;
        let count = page_size("first", first)?;
        let after = after.map(|cursor| decode_cursor("pur", &cursor)).transpose()?;
        ctx.data_unchecked::<Ledger>().balance(&organization_id).await?;
        let purchases = ctx.data_unchecked::<Purchases>();
        let (items, has_next) = purchases.list(&organization_id, count, after.as_deref()).await?;
        let totals = PurchaseTotals { purchases: purchases.clone(), organization_id };
        let mut connection = Connection::with_additional_fields(after.is_some(), has_next, totals);
        connection.edges.extend(
            items.into_iter().map(|purchase| Edge::new(encode_cursor("pur", &purchase.id), CreditPurchase(purchase))),
        );
        Ok(connection)
    }

    /// The credit packages on sale. Public: no token needed.
    async fn credit_packages(&self, ctx: &Context<'_>) -> Vec<CreditPackage> {
        ctx.data_unchecked::<PackageCatalog>().all().iter().cloned().map(CreditPackage).collect()
    }
}

/// Mutations of purchases.
#[derive(Default)]
pub struct BillingMutation;

#[Object]
impl BillingMutation {
    /// Starts buying a credit package through Stripe Checkout. The purchase is `PENDING`
    /// until Stripe reports the payment; then its credits (plus bonus) are added once.
    async fn purchase_package(
        &self,
        ctx: &Context<'_>,
        input: PurchasePackageInput,
    ) -> Result<PurchasePackagePayload, ApiError> {
        let organization_id = scope(ctx, input.organization_id.as_ref(), Access::Purchase)?;
        let started = ctx
            .data_unchecked::<Billing>()
            .purchase_package(
                &organization_id,
                input.package_id.as_str(),
                input.success_url,
                input.cancel_url,
                input.save_for_auto_top_up.unwrap_or(false),
            )
            .await?;
        Ok(PurchasePackagePayload {
            purchase: CreditPurchase(started.purchase),
            checkout_session_id: started.checkout_session_id,
            checkout_url: started.checkout_url,
        })
    }
}
