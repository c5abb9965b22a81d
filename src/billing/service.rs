//! Selling credit packages: starting a Checkout, and applying Stripe's webhook events
//! to purchases and the ledger exactly once, in any order.

use entity::{credit_purchase, stripe_event, stripe_refund};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    SqlErr,
};

use super::stripe::{CheckoutRequest, GatewayError, StripeGateway};
use super::webhook::{ChargeObject, Event, SessionObject, expandable_id};
use super::{CreditPackage, CreditPurchase, PackageCatalog};
use crate::ledger::events::BalanceEvent;
use crate::ledger::{ChangeRequest, Ledger, LedgerError, TransactionKind, apply_change, clawback, new_id, now};

/// The reference type of ledger transactions that belong to a purchase.
pub const PURCHASE_REFERENCE: &str = "credit_purchase";

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

/// What became of one webhook delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The event was applied now.
    Applied,
    /// The event id was applied before; nothing changed.
    Duplicate,
    /// Not a type we act on.
    Ignored,
}

/// Purchases of credit packages through Stripe.
#[derive(Clone, Debug)]
pub struct Billing {
    ledger: Ledger,
    catalog: PackageCatalog,
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

    /// Starts buying a package: creates a Stripe Checkout Session (idempotent on the new
    /// purchase id) and records the purchase as `PENDING`. Credits arrive with the webhook.
    #[tracing::instrument(skip(self, success_url, cancel_url))]
    pub async fn purchase_package(
        &self,
        organization_id: &str,
        package_id: &str,
        success_url: Option<String>,
        cancel_url: Option<String>,
    ) -> Result<StartedPurchase, BillingError> {
        let package =
            self.catalog.get(package_id).ok_or_else(|| BillingError::UnknownPackage(package_id.to_owned()))?;
        let gateway = self.gateway.as_ref().ok_or(BillingError::NotConfigured)?;
        let success_url = check_url("successUrl", success_url.or_else(|| self.success_url.clone()))?;
        let cancel_url = check_url("cancelUrl", cancel_url.or_else(|| self.cancel_url.clone()))?;
        if self.ledger.organization(organization_id).await?.is_none() {
            return Err(LedgerError::OrganizationNotFound.into());
        }
        let purchase_id = new_id("pur");
        let session = gateway
            .create_checkout_session(&CheckoutRequest {
                purchase_id: &purchase_id,
                organization_id,
                package,
                success_url: &success_url,
                cancel_url: &cancel_url,
            })
            .await?;
        // Should this insert be lost, the paid webhook recreates the purchase from the
        // session's metadata, so a paid session is never lost.
        let row = pending_purchase(purchase_id, organization_id, package, &session.id).insert(self.ledger.db()).await?;
        Ok(StartedPurchase { purchase: row.into(), checkout_session_id: session.id, checkout_url: session.url })
    }

    /// Applies a verified webhook event at most once: the event id is recorded in the same
    /// database transaction as its effect. An error means nothing was applied (answer 5xx
    /// so Stripe retries).
    #[tracing::instrument(skip(self, event), fields(event = %event.id, event_type = %event.event_type))]
    pub async fn apply_event(&self, event: &Event) -> Result<EventOutcome, BillingError> {
        // Read the object before taking any lock: a malformed event changes nothing.
        let effect = match event.event_type.as_str() {
            "charge.refunded" => Effect::Refunded(parse(event)?),
            "checkout.session.completed" => {
                let session: SessionObject = parse(event)?;
                if session.payment_status.as_deref() == Some("paid") {
                    Effect::Paid(session)
                } else {
                    // An asynchronous payment is still in flight: its own event follows.
                    Effect::Nothing
                }
            }
            "checkout.session.async_payment_succeeded" => Effect::Paid(parse(event)?),
            "checkout.session.async_payment_failed" => Effect::Closed(parse(event)?, "FAILED"),
            "checkout.session.expired" => Effect::Closed(parse(event)?, "EXPIRED"),
            _ => return Ok(EventOutcome::Ignored),
        };
        let txn = self.ledger.begin_write().await?;
        let recorded = stripe_event::Entity::insert(stripe_event::ActiveModel {
            id: Set(event.id.clone()),
            event_type: Set(event.event_type.clone()),
            processed_at: Set(now()),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(error) = recorded {
            txn.rollback().await?;
            return match error.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => Ok(EventOutcome::Duplicate),
                _ => Err(error.into()),
            };
        }
        // The organization whose balance changed, to announce after commit.
        let mut touched = None;
        let applied = match &effect {
            Effect::Paid(session) => self.session_paid(&txn, session, &mut touched).await,
            Effect::Closed(session, status) => self.session_closed(&txn, session, status).await,
            Effect::Refunded(charge) => self.charge_refunded(&txn, charge, &mut touched).await,
            Effect::Nothing => Ok(()),
        };
        match applied {
            Ok(()) => {
                txn.commit().await?;
                self.ledger.announce(touched.map(|organization_id| BalanceEvent::Resync { organization_id }));
                Ok(EventOutcome::Applied)
            }
            Err(error) => {
                txn.rollback().await?;
                Err(error)
            }
        }
    }

    /// Credits a paid session's purchase, once per session whatever the events.
    async fn session_paid(
        &self,
        txn: &DatabaseTransaction,
        session: &SessionObject,
        touched: &mut Option<String>,
    ) -> Result<(), BillingError> {
        let Some(purchase) = self.purchase_for_session(txn, session).await? else {
            return Ok(());
        };
        let amount_matches = session.amount_total == Some(purchase.amount)
            && session.currency.as_deref().is_some_and(|currency| currency.eq_ignore_ascii_case(&purchase.currency));
        if !amount_matches {
            tracing::error!(
                purchase = %purchase.id,
                expected_amount = purchase.amount,
                expected_currency = %purchase.currency,
                amount = ?session.amount_total,
                currency = ?session.currency,
                "paid Checkout Session does not match its package: no credits, purchase FAILED"
            );
            set_status(txn, &purchase.id, &["PENDING", "EXPIRED"], "FAILED", None).await?;
            return Ok(());
        }
        // The conditional update locks the purchase row: of two events for one session,
        // only the first to get here finds it unpaid.
        let payment_intent = expandable_id(&session.payment_intent);
        if let Some(payment_intent) = &payment_intent {
            record_refund(txn, payment_intent, 0).await?;
        }
        if !set_status(txn, &purchase.id, &["PENDING", "FAILED", "EXPIRED"], "PAID", payment_intent).await? {
            return Ok(());
        }
        let request = ChangeRequest {
            organization_id: purchase.organization_id.clone(),
            kind: TransactionKind::Purchase,
            delta: purchase.credits,
            description: Some(self.describe(&purchase)),
            reference_type: Some(PURCHASE_REFERENCE.into()),
            reference_id: Some(purchase.id.clone()),
            idempotency_key: None,
        };
        apply_change(txn, &request, now()).await?;
        *touched = Some(purchase.organization_id.clone());
        tracing::info!(purchase = %purchase.id, credits = purchase.credits, "purchase paid and credited");
        // A refund may have been reported before the payment.
        self.reconcile_refund(txn, &purchase.id, touched).await
    }

    fn describe(&self, purchase: &CreditPurchase) -> String {
        let name = self.catalog.get(&purchase.package_id).map_or(purchase.package_id.as_str(), |p| p.name.as_str());
        format!("Purchase of the {name} credit package")
    }

    /// Marks a pending session's purchase as failed or expired (never a paid one).
    async fn session_closed(
        &self,
        txn: &DatabaseTransaction,
        session: &SessionObject,
        status: &str,
    ) -> Result<(), BillingError> {
        if let Some(purchase) = self.purchase_for_session(txn, session).await? {
            set_status(txn, &purchase.id, &["PENDING"], status, None).await?;
        }
        Ok(())
    }

    /// The purchase of a session; recreated from the session's metadata when the local
    /// record is missing. `None` for sessions that are not ours.
    async fn purchase_for_session(
        &self,
        txn: &DatabaseTransaction,
        session: &SessionObject,
    ) -> Result<Option<CreditPurchase>, BillingError> {
        let existing = credit_purchase::Entity::find()
            .filter(credit_purchase::Column::CheckoutSessionId.eq(&session.id))
            .one(txn)
            .await?;
        if let Some(row) = existing {
            return Ok(Some(row.into()));
        }
        let metadata = session.metadata.clone().unwrap_or_default();
        let (Some(organization_id), Some(package_id)) =
            (metadata.get("organization_id").or(session.client_reference_id.as_ref()), metadata.get("package_id"))
        else {
            tracing::warn!(session = %session.id, "Checkout Session without our metadata; ignored");
            return Ok(None);
        };
        let Some(package) = self.catalog.get(package_id) else {
            tracing::error!(session = %session.id, package = %package_id, "Checkout Session for an unknown package; ignored");
            return Ok(None);
        };
        if crate::ledger::Ledger::organization_in(txn, organization_id).await?.is_none() {
            tracing::error!(session = %session.id, organization = %organization_id, "Checkout Session for an unknown organization; ignored");
            return Ok(None);
        }
        let id = metadata.get("purchase_id").cloned().unwrap_or_else(|| new_id("pur"));
        tracing::warn!(session = %session.id, purchase = %id, "purchase record was missing; recreated from the session");
        let row = pending_purchase(id, organization_id, package, &session.id).insert(txn).await?;
        Ok(Some(row.into()))
    }

    /// Records the charge's cumulative refund, then takes back its share of credits.
    async fn charge_refunded(
        &self,
        txn: &DatabaseTransaction,
        charge: &ChargeObject,
        touched: &mut Option<String>,
    ) -> Result<(), BillingError> {
        let Some(payment_intent) = expandable_id(&charge.payment_intent) else {
            tracing::warn!(charge = %charge.id, "refunded charge without a PaymentIntent; ignored");
            return Ok(());
        };
        record_refund(txn, &payment_intent, charge.amount_refunded).await?;
        let purchase = credit_purchase::Entity::find()
            .filter(credit_purchase::Column::PaymentIntentId.eq(&payment_intent))
            .one(txn)
            .await?;
        match purchase {
            Some(purchase) => self.reconcile_refund(txn, &purchase.id, touched).await,
            // Not paid yet (or not ours): the paid event reconciles when it comes.
            None => Ok(()),
        }
    }

    /// Brings a paid purchase's clawback up to the refund Stripe reported: the refunded
    /// share of its credits, taken back as a `REFUND` but never below a zero balance.
    async fn reconcile_refund(
        &self,
        txn: &DatabaseTransaction,
        purchase_id: &str,
        touched: &mut Option<String>,
    ) -> Result<(), BillingError> {
        let Some(purchase) = credit_purchase::Entity::find_by_id(purchase_id.to_owned()).one(txn).await? else {
            return Ok(());
        };
        let Some(payment_intent) = &purchase.payment_intent_id else {
            return Ok(());
        };
        let Some(refund) = stripe_refund::Entity::find_by_id(payment_intent.clone()).one(txn).await? else {
            return Ok(());
        };
        let refunded = refund.amount_refunded.min(purchase.amount);
        if refunded <= purchase.refunded_amount || purchase.amount <= 0 {
            return Ok(());
        }
        let target = (i128::from(purchase.credits) * i128::from(refunded) / i128::from(purchase.amount)) as i64;
        let wanted = target - purchase.refunded_credits;
        let status = if refunded >= purchase.amount { "REFUNDED" } else { "PARTIALLY_REFUNDED" };
        // Conditional on the amount we read, so concurrent deliveries claw back once.
        let updated = credit_purchase::Entity::update_many()
            .col_expr(credit_purchase::Column::RefundedAmount, Expr::value(refunded))
            .col_expr(credit_purchase::Column::RefundedCredits, Expr::value(target))
            .col_expr(credit_purchase::Column::Status, Expr::value(status))
            .col_expr(credit_purchase::Column::UpdatedAt, Expr::value(now()))
            .filter(credit_purchase::Column::Id.eq(&purchase.id))
            .filter(credit_purchase::Column::RefundedAmount.eq(purchase.refunded_amount))
            .exec(txn)
            .await?;
        if updated.rows_affected == 0 || wanted <= 0 {
            return Ok(());
        }
        let description = format!("Refund of purchase {}: {wanted} credits", purchase.id);
        *touched = Some(purchase.organization_id.clone());
        let taken =
            clawback(txn, &purchase.organization_id, wanted, &description, (PURCHASE_REFERENCE, &purchase.id), now())
                .await?;
        if taken.shortfall > 0 {
            tracing::warn!(
                purchase = %purchase.id,
                taken = taken.taken,
                shortfall = taken.shortfall,
                "refund clawback: credits already spent were not recovered"
            );
        }
        Ok(())
    }
}

/// Records the cumulative amount Stripe reports refunded for a PaymentIntent, keeping the
/// largest seen (older deliveries cannot lower it), and locks that row until commit.
///
/// Both the paid and the refunded paths call this first (the paid one with 0), so the two
/// events of one PaymentIntent serialize on this row: whichever commits second sees the
/// other's work, and a refund racing its own payment is never lost.
async fn record_refund<C: ConnectionTrait>(
    conn: &C,
    payment_intent: &str,
    amount_refunded: i64,
) -> Result<(), BillingError> {
    stripe_refund::Entity::insert(stripe_refund::ActiveModel {
        payment_intent_id: Set(payment_intent.to_owned()),
        amount_refunded: Set(amount_refunded),
        updated_at: Set(now()),
    })
    .on_conflict(
        OnConflict::column(stripe_refund::Column::PaymentIntentId)
            .value(
                stripe_refund::Column::AmountRefunded,
                // `excluded` is the proposed row, on PostgreSQL and SQLite alike.
                Expr::cust(
                    "CASE WHEN excluded.amount_refunded > stripe_refunds.amount_refunded \
                     THEN excluded.amount_refunded ELSE stripe_refunds.amount_refunded END",
                ),
            )
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// A new `PENDING` purchase of `package` through Checkout Session `session_id`.
fn pending_purchase(
    id: String,
    organization_id: &str,
    package: &CreditPackage,
    session_id: &str,
) -> credit_purchase::ActiveModel {
    let at = now();
    credit_purchase::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id.to_owned()),
        package_id: Set(package.id.clone()),
        status: Set("PENDING".into()),
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

/// What a handled event does.
enum Effect {
    /// A paid session: credit its purchase.
    Paid(SessionObject),
    /// A session that will not be paid: mark its pending purchase.
    Closed(SessionObject, &'static str),
    /// A refunded charge: take back its share.
    Refunded(ChargeObject),
    /// Recorded, nothing else.
    Nothing,
}

/// Moves a purchase from one of `from` to `to`; false when it was in no such status.
async fn set_status<C: ConnectionTrait>(
    conn: &C,
    purchase_id: &str,
    from: &[&str],
    to: &str,
    payment_intent: Option<String>,
) -> Result<bool, BillingError> {
    let mut update = credit_purchase::Entity::update_many()
        .col_expr(credit_purchase::Column::Status, Expr::value(to))
        .col_expr(credit_purchase::Column::UpdatedAt, Expr::value(now()));
    if let Some(payment_intent) = payment_intent {
        update = update.col_expr(credit_purchase::Column::PaymentIntentId, Expr::value(payment_intent));
    }
    let result = update
        .filter(credit_purchase::Column::Id.eq(purchase_id))
        .filter(credit_purchase::Column::Status.is_in(from.iter().copied()))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

fn parse<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, BillingError> {
    serde_json::from_value(event.data.object.clone()).map_err(|error| BillingError::MalformedEvent {
        event_type: event.event_type.clone(),
        message: error.to_string(),
    })
}

/// Reads a JSON event body.
pub fn parse_event(body: &[u8]) -> Result<Event, serde_json::Error> {
    serde_json::from_slice::<Event>(body)
}
