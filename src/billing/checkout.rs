//! Starting a purchase: the [`Billing`] service, which opens a Stripe Checkout Session for
//! a credit package and records the purchase as `PENDING`. The credits arrive later, from
//! the webhook events that `payment_events.rs` applies.

use entity::credit_purchase;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};

use super::stripe::{CheckoutRequest, GatewayError, StripeGateway};
use super::{CreditPackage, CreditPurchase, PackageCatalog, PurchaseStatus};
use crate::ledger::{Ledger, LedgerError, new_id};

/// The reference type of ledger transactions that belong to a purchase.
pub const PURCHASE_REFERENCE: &str = "credit_purchase";

/// In a return URL, replaced by the new purchase's id (`?purchase={PURCHASE_ID}`).
pub const PURCHASE_ID_PLACEHOLDER: &str = "{PURCHASE_ID}";

/// Why a billing operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// No package with that id is on sale.
    #[error("unknown credit package {0:?}")]
    UnknownPackage(String),
    /// A return URL is missing or unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// `STRIPE_SECRET_KEY` is not set.
    #[error("the payment provider is not configured")]
    NotConfigured,
    /// Stripe failed or timed out.
    #[error(transparent)]
    Provider(#[from] GatewayError),
    /// A webhook event lacks a field its type must have.
    #[error("malformed {event_type} event: {message}")]
    MalformedEvent {
        /// The event type.
        event_type: String,
        /// What is wrong.
        message: String,
    },
    /// The ledger or the database failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl crate::ledger::Retryable for BillingError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Ledger(error) if error.is_retryable())
    }
}

impl From<sea_orm::DbErr> for BillingError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Ledger(error.into())
    }
}

/// A started purchase: the local record and where to send the buyer.
#[derive(Clone, Debug)]
pub struct StartedPurchase {
    /// The pending purchase.
    pub purchase: CreditPurchase,
    /// Stripe Checkout Session id.
    pub checkout_session_id: String,
    /// The hosted Checkout page.
    pub checkout_url: String,
}

/// Purchases of credit packages through Stripe: starts Checkouts here, applies webhook
/// events in `payment_events.rs` and `disputes.rs`.
#[derive(Clone, Debug)]
pub struct Billing {
    pub(super) ledger: Ledger,
    pub(super) catalog: PackageCatalog,
    gateway: Option<StripeGateway>,
    success_url: Option<String>,
    cancel_url: Option<String>,
}

fn check_url(name: &str, url: Option<String>) -> Result<String, BillingError> {
    let url = url.ok_or_else(|| {
        BillingError::InvalidInput(format!("{name} is required (no default is configured on the server)"))
    })?;
    let valid = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048;
    if valid { Ok(url) } else { Err(BillingError::InvalidInput(format!("{name} must be an http(s) URL"))) }
}

impl Billing {
    /// Billing over `ledger`'s database, selling `catalog`, through `gateway` when configured.
    pub fn new(
        ledger: Ledger,
        catalog: PackageCatalog,
        gateway: Option<StripeGateway>,
        success_url: Option<String>,
        cancel_url: Option<String>,
    ) -> Self {
        Self { ledger, catalog, gateway, success_url, cancel_url }
    }

    /// The same billing acting for `audit`'s actor (Stripe, for a webhook delivery): the
    /// money its writes move is audited as theirs.
    pub fn acting_for(&self, audit: crate::ledger::Audit) -> Self {
        Self { ledger: self.ledger.with_audit(audit), ..self.clone() }
    }

    /// The Stripe gateway, when configured.
    pub(super) fn gateway(&self) -> Option<&StripeGateway> {
        self.gateway.as_ref()
    }

    /// Whether the secret key is a live-mode one. Without a key we can only be in test
    /// mode: nobody can have sold anything live through this server.
    pub fn livemode(&self) -> bool {
        self.gateway.as_ref().is_some_and(StripeGateway::livemode)
    }

    /// Starts buying a package: creates a Stripe Checkout Session (idempotent on the new
    /// purchase id) and records the purchase as `PENDING`. Credits arrive with the webhook.
    ///
    /// With `save_for_auto_top_up`, the Checkout belongs to the organization's Stripe
    /// Customer (created once, then reused) and keeps the card for off-session payments;
    /// once paid, that card becomes the organization's for auto top-up.
    #[tracing::instrument(skip(self, success_url, cancel_url))]
    pub async fn purchase_package(
        &self,
        organization_id: &str,
        package_id: &str,
        success_url: Option<String>,
        cancel_url: Option<String>,
        save_for_auto_top_up: bool,
    ) -> Result<StartedPurchase, BillingError> {
        let package =
            self.catalog.get(package_id).ok_or_else(|| BillingError::UnknownPackage(package_id.to_owned()))?;
        let gateway = self.gateway.as_ref().ok_or(BillingError::NotConfigured)?;
        let success_url = check_url("successUrl", success_url.or_else(|| self.success_url.clone()))?;
        let cancel_url = check_url("cancelUrl", cancel_url.or_else(|| self.cancel_url.clone()))?;
        if self.ledger.organization(organization_id).await?.is_none() {
            return Err(LedgerError::OrganizationNotFound.into());
        }
        let customer = match save_for_auto_top_up {
            true => Some(match self.ledger.auto_top_up(organization_id).await?.stripe_customer_id {
                Some(customer) => customer,
                None => {
                    let customer = gateway.create_customer(organization_id).await?;
                    self.ledger.set_stripe_customer(organization_id, &customer).await?;
                    customer
                }
            }),
            false => None,
        };
        let purchase_id = new_id("pur");
        // The buyer comes back to a page that can show this very purchase; Stripe's own
        // `{CHECKOUT_SESSION_ID}` is left for Stripe to fill in.
        let success_url = success_url.replace(PURCHASE_ID_PLACEHOLDER, &purchase_id);
        let cancel_url = cancel_url.replace(PURCHASE_ID_PLACEHOLDER, &purchase_id);
        let session = gateway
            .create_checkout_session(&CheckoutRequest {
                purchase_id: &purchase_id,
                organization_id,
                package,
                success_url: &success_url,
                cancel_url: &cancel_url,
                save_for_customer: customer.as_deref(),
            })
            .await?;
        // Should this insert be lost, the paid webhook recreates the purchase from the
        // session's metadata, so a paid session is never lost.
        let row = pending_purchase(purchase_id, organization_id, package, &session.id, self.ledger.now())
            .insert(self.ledger.db())
            .await?;
        Ok(StartedPurchase { purchase: row.try_into()?, checkout_session_id: session.id, checkout_url: session.url })
    }
}

/// A new `PENDING` purchase of `package` through Checkout Session `session_id`.
pub(super) fn pending_purchase(
    id: String,
    organization_id: &str,
    package: &CreditPackage,
    session_id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> credit_purchase::ActiveModel {
    credit_purchase::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id.to_owned()),
        package_id: Set(package.id.clone()),
        status: Set(PurchaseStatus::Pending.as_str().to_owned()),
        credits: Set(package.total_credits()),
        amount: Set(package.price_amount),
        currency: Set(package.currency.clone()),
        checkout_session_id: Set(session_id.to_owned()),
        created_at: Set(at),
        updated_at: Set(at),
        payment_intent_id: Set(None),
        refunded_amount: Set(0),
        refunded_credits: Set(0),
    }
}
