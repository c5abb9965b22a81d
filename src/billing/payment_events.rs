//! The webhook state machine: applies Stripe's events to purchases and the ledger exactly
//! once, in any order of delivery.
//!
//! Which events count: only our own account's (no Stripe Connect `account`), in the mode
//! of our secret key. A paid Checkout Session is credited only through the purchase that
//! `purchasePackage` recorded or, should that row be lost, through the organization,
//! package and purchase ids of its `metadata`; never through `client_reference_id`, which
//! a buyer can set on a Payment Link. A paid session that matches nothing is kept as an
//! orphan (`stripe_orphan_sessions`) for an operator. Refunds are recorded here, disputes
//! in `disputes.rs`; what both take back is one rule, in `settlement.rs`, and every event
//! of a PaymentIntent serializes on its `stripe_refunds` row.

use entity::{credit_purchase, stripe_event, stripe_orphan_session};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, SqlErr};

use super::checkout::pending_purchase;
use super::disputes::DisputeReport;
use super::settlement::record_refund;
use super::stripe::SAVE_CARD_METADATA;
use super::webhook::{ChargeObject, Event, PaymentError, PaymentIntentObject, SessionObject, expandable_id};
use super::{Billing, BillingError, CreditPurchase, PURCHASE_REFERENCE, PurchaseStatus};
use crate::ledger::topups::{SavedPaymentMethod, TopUpEnd};
use crate::ledger::{AuditAction, ChangeRequest, DEFAULT_PRIORITY, EventType, LedgerTx, TransactionKind};
use crate::ledger::{LotCategory, LotSpec};

/// What became of one webhook delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The event was applied now.
    Applied,
    /// The event id was applied before; nothing changed.
    Duplicate,
    /// Not a type we act on, or not meant for us (another account or mode).
    Ignored,
}

/// What a handled event does.
enum Effect {
    /// A paid session: credit its purchase.
    Paid(SessionObject),
    /// A session that will not be paid: mark its pending purchase.
    Closed(SessionObject, PurchaseStatus),
    /// A refunded charge: take back its share.
    Refunded(ChargeObject),
    /// Funds withdrawn or reinstated for a dispute.
    Dispute(DisputeReport),
    /// An auto top-up's PaymentIntent succeeded: credit it (once).
    TopUpPaid(String, String),
    /// An auto top-up's PaymentIntent failed.
    TopUpEnded(String, String, TopUpEnd),
    /// Recorded, nothing else.
    Nothing,
}

/// Which purchase a Checkout Session pays for.
enum SessionPurchase {
    /// Ours: the recorded purchase, or one recreated from complete metadata.
    Found(CreditPurchase),
    /// Meant for us but matching no organization or package (or lacking our ids).
    Orphan(String),
    /// Carries none of our identifiers: another product on the same Stripe account.
    Foreign,
}

impl Billing {
    /// Applies a verified webhook event at most once: the event id is recorded in the same
    /// database transaction as its effect. An error means nothing was applied (answer 5xx
    /// so Stripe retries).
    #[tracing::instrument(skip(self, event), fields(event = %event.id, event_type = %event.event_type))]
    pub async fn apply_event(&self, event: &Event) -> Result<EventOutcome, BillingError> {
        if let Some(account) = &event.account {
            // A Connect platform's endpoint also receives its connected accounts' events;
            // their sessions and charges are not our sales.
            tracing::warn!(%account, "Stripe Connect event for another account; ignored");
            return Ok(EventOutcome::Ignored);
        }
        let ours = self.livemode();
        if let Some(livemode) = event.livemode.filter(|livemode| *livemode != ours) {
            // A test-mode event must never credit a live deployment, nor the reverse.
            tracing::warn!(livemode, key_livemode = ours, "Stripe event of the other mode; ignored");
            return Ok(EventOutcome::Ignored);
        }
        // Read the object before taking any lock: a malformed event changes nothing.
        let effect = match event.event_type.as_str() {
            "charge.refunded" => Effect::Refunded(parse(event)?),
            "charge.dispute.funds_withdrawn" => Effect::Dispute(DisputeReport::Withdrawn(parse(event)?)),
            "charge.dispute.funds_reinstated" => Effect::Dispute(DisputeReport::Reinstated(parse(event)?)),
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
            "checkout.session.async_payment_failed" => Effect::Closed(parse(event)?, PurchaseStatus::Failed),
            "checkout.session.expired" => Effect::Closed(parse(event)?, PurchaseStatus::Expired),
            "payment_intent.succeeded" | "payment_intent.payment_failed" => {
                let intent: PaymentIntentObject = parse(event)?;
                let top_up = intent.metadata.as_ref().and_then(|metadata| metadata.get("topup_id")).cloned();
                // Checkout's own PaymentIntents are settled by the session's events.
                let Some(top_up) = top_up else { return Ok(EventOutcome::Ignored) };
                if event.event_type == "payment_intent.succeeded" {
                    Effect::TopUpPaid(top_up, intent.id)
                } else {
                    let error = intent.last_payment_error.unwrap_or(PaymentError { code: None, message: None });
                    let message = error.message.unwrap_or_else(|| "the payment failed".into());
                    let end = match error.code.as_deref() {
                        Some("authentication_required") => TopUpEnd::RequiresAction(message),
                        _ => TopUpEnd::Failed(message),
                    };
                    Effect::TopUpEnded(top_up, intent.id, end)
                }
            }
            _ => return Ok(EventOutcome::Ignored),
        };
        // A paid Checkout that keeps its card: the card is read from Stripe before the
        // event is applied (and before any lock is taken), so it is saved with the credits.
        let card = match &effect {
            Effect::Paid(session) => self.card_to_save(session).await?,
            _ => None,
        };
        // One ledger transaction: the event id, its effect on purchases and the balance
        // change commit together, and the change is announced after the commit.
        let mut tx = self.ledger.begin().await?;
        let recorded = stripe_event::Entity::insert(stripe_event::ActiveModel {
            id: Set(event.id.clone()),
            event_type: Set(event.event_type.clone()),
            processed_at: Set(tx.at()),
        })
        .exec_without_returning(tx.conn())
        .await;
        if let Err(error) = recorded {
            tx.rollback().await?;
            return match error.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => Ok(EventOutcome::Duplicate),
                _ => Err(error.into()),
            };
        }
        let applied = match &effect {
            Effect::Paid(session) => self.session_paid(&mut tx, session, card.as_ref()).await,
            Effect::TopUpPaid(top_up, payment_intent) => self.credit_top_up(&mut tx, top_up, payment_intent).await,
            Effect::TopUpEnded(top_up, payment_intent, end) => {
                self.end_top_up(&mut tx, top_up, Some(payment_intent), end).await
            }
            Effect::Closed(session, status) => self.session_closed(&mut tx, session, *status).await,
            Effect::Refunded(charge) => self.charge_refunded(&mut tx, charge).await,
            Effect::Dispute(report) => self.dispute_reported(&mut tx, report).await,
            Effect::Nothing => Ok(()),
        };
        tx.finish(applied).await.map(|()| EventOutcome::Applied)
    }

    /// The card of a paid session that asked to keep it for auto top-up, read from Stripe.
    async fn card_to_save(&self, session: &SessionObject) -> Result<Option<SavedPaymentMethod>, BillingError> {
        let saving =
            session.metadata.as_ref().and_then(|metadata| metadata.get(SAVE_CARD_METADATA)).map(String::as_str);
        let (Some("true"), Some(payment_intent), Some(gateway)) =
            (saving, expandable_id(&session.payment_intent), self.gateway())
        else {
            return Ok(None);
        };
        Ok(gateway.card_of(&payment_intent).await?)
    }

    /// Credits a paid session's purchase, once per session whatever the events; keeps
    /// its card for auto top-up when it asked to.
    async fn session_paid(
        &self,
        tx: &mut LedgerTx,
        session: &SessionObject,
        card: Option<&SavedPaymentMethod>,
    ) -> Result<(), BillingError> {
        if let (Some(card), Some(organization_id)) =
            (card, session.metadata.as_ref().and_then(|metadata| metadata.get("organization_id")))
        {
            tx.save_payment_method(organization_id, None, card).await?;
        }
        let purchase = match self.purchase_for_session(tx, session).await? {
            SessionPurchase::Found(purchase) => purchase,
            SessionPurchase::Orphan(reason) => return record_orphan(tx.conn(), session, &reason, tx.at()).await,
            SessionPurchase::Foreign => {
                tracing::warn!(session = %session.id, "paid Checkout Session without our identifiers; ignored");
                return Ok(());
            }
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
            use PurchaseStatus::{Expired, Failed, Pending};
            if set_status(tx.conn(), &purchase.id, &[Pending, Expired], Failed, None, tx.at()).await? {
                raise(tx, &purchase, EventType::PurchaseFailed, Failed).await?;
            }
            return Ok(());
        }
        // The conditional update locks the purchase row: of two events for one session,
        // only the first to get here finds it unpaid.
        let payment_intent = expandable_id(&session.payment_intent);
        if let Some(payment_intent) = &payment_intent {
            record_refund(tx.conn(), payment_intent, 0, tx.at()).await?;
        }
        use PurchaseStatus::{Expired, Failed, Paid, Pending};
        if !set_status(tx.conn(), &purchase.id, &[Pending, Failed, Expired], Paid, payment_intent.clone(), tx.at())
            .await?
        {
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
            lot: Some(LotSpec {
                category: LotCategory::Paid,
                priority: DEFAULT_PRIORITY,
                expires_at: self
                    .catalog
                    .get(&purchase.package_id)
                    .and_then(|package| package.expires_after_days)
                    .map(|days| tx.at() + chrono::Duration::days(days)),
            }),
            // Stripe's: no key or session made it.
            by: Default::default(),
        };
        let (transaction, _, _) = tx.change(&request).await?;
        tracing::info!(purchase = %purchase.id, credits = purchase.credits, "purchase paid and credited");
        let details = serde_json::json!({
            "packageId": purchase.package_id,
            "credits": purchase.credits,
            "amount": purchase.amount,
            "currency": purchase.currency,
            "paymentIntentId": payment_intent,
            "transactionId": transaction.id,
        });
        tx.audit(Some(&purchase.organization_id), AuditAction::CompletePurchase, Some(&purchase.id), details);
        let mut fields = purchase_fields(&purchase, Paid);
        fields.insert("transactionId".into(), transaction.id.into());
        tx.raise(&purchase.organization_id, EventType::PurchaseCompleted, fields).await?;
        // A refund or a dispute may have been reported before the payment.
        match &payment_intent {
            Some(payment_intent) => self.settle(tx, payment_intent, None).await,
            None => Ok(()),
        }
    }

    fn describe(&self, purchase: &CreditPurchase) -> String {
        let name = self.catalog.get(&purchase.package_id).map_or(purchase.package_id.as_str(), |p| p.name.as_str());
        format!("Purchase of the {name} credit package")
    }

    /// Marks a pending session's purchase as failed or expired (never a paid one).
    async fn session_closed(
        &self,
        tx: &mut LedgerTx,
        session: &SessionObject,
        status: PurchaseStatus,
    ) -> Result<(), BillingError> {
        match self.purchase_for_session(tx, session).await? {
            SessionPurchase::Found(purchase) => {
                let closed =
                    set_status(tx.conn(), &purchase.id, &[PurchaseStatus::Pending], status, None, tx.at()).await?;
                if closed && status == PurchaseStatus::Failed {
                    raise(tx, &purchase, EventType::PurchaseFailed, status).await?;
                }
            }
            // Nothing was paid, so there is nothing to keep for an operator.
            SessionPurchase::Orphan(reason) => {
                tracing::warn!(session = %session.id, %reason, "closed Checkout Session matches no purchase; ignored");
            }
            SessionPurchase::Foreign => {}
        }
        Ok(())
    }

    /// The purchase of a session: the one `purchasePackage` recorded or, when that row is
    /// missing, one recreated from the organization, package and purchase ids of the
    /// session's metadata, all three. `client_reference_id` is never enough on its own:
    /// anyone can set it on a Payment Link of the same account.
    async fn purchase_for_session(
        &self,
        tx: &mut LedgerTx,
        session: &SessionObject,
    ) -> Result<SessionPurchase, BillingError> {
        let existing = credit_purchase::Entity::find()
            .filter(credit_purchase::Column::CheckoutSessionId.eq(&session.id))
            .one(tx.conn())
            .await?;
        if let Some(row) = existing {
            return Ok(SessionPurchase::Found(row.try_into()?));
        }
        let metadata = session.metadata.clone().unwrap_or_default();
        let (organization_id, package_id, purchase_id) =
            (metadata.get("organization_id"), metadata.get("package_id"), metadata.get("purchase_id"));
        let (Some(organization_id), Some(package_id), Some(purchase_id)) = (organization_id, package_id, purchase_id)
        else {
            let ours = organization_id.is_some()
                || package_id.is_some()
                || purchase_id.is_some()
                || session.client_reference_id.is_some();
            return Ok(if ours {
                SessionPurchase::Orphan(
                    "no local purchase and no organization, package and purchase ids in metadata".into(),
                )
            } else {
                SessionPurchase::Foreign
            });
        };
        let Some(package) = self.catalog.get(package_id) else {
            return Ok(SessionPurchase::Orphan(format!("unknown credit package {package_id:?}")));
        };
        if crate::ledger::Ledger::organization_in(tx.conn(), organization_id).await?.is_none() {
            return Ok(SessionPurchase::Orphan(format!("unknown organization {organization_id:?}")));
        }
        if !purchase_id.starts_with("pur_") || purchase_id.len() > 255 {
            return Ok(SessionPurchase::Orphan(format!("malformed purchase id {purchase_id:?}")));
        }
        let taken = credit_purchase::Entity::find_by_id(purchase_id.clone()).one(tx.conn()).await?;
        if taken.is_some() {
            // The id belongs to another session's purchase: crediting it again would
            // credit one payment twice.
            return Ok(SessionPurchase::Orphan(format!("purchase {purchase_id} belongs to another session")));
        }
        tracing::warn!(session = %session.id, purchase = %purchase_id, "purchase record was missing; recreated from the session");
        let row = pending_purchase(purchase_id.clone(), organization_id, package, &session.id, tx.at())
            .insert(tx.conn())
            .await?;
        Ok(SessionPurchase::Found(row.try_into()?))
    }

    /// Records the charge's cumulative refund, then settles its purchase (the refunded
    /// share, counted with its disputes).
    async fn charge_refunded(&self, tx: &mut LedgerTx, charge: &ChargeObject) -> Result<(), BillingError> {
        let Some(payment_intent) = expandable_id(&charge.payment_intent) else {
            tracing::warn!(charge = %charge.id, "refunded charge without a PaymentIntent; ignored");
            return Ok(());
        };
        record_refund(tx.conn(), &payment_intent, charge.amount_refunded, tx.at()).await?;
        // Not paid yet (or not ours): the paid event settles it when it comes.
        self.settle(tx, &payment_intent, None).await
    }
}

/// Keeps a paid session that credits nothing, once per session, for an operator: the
/// money was taken, and a retry would not help, so the answer stays 2xx.
async fn record_orphan(
    conn: &impl ConnectionTrait,
    session: &SessionObject,
    reason: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), BillingError> {
    tracing::error!(
        session = %session.id,
        %reason,
        amount = ?session.amount_total,
        currency = ?session.currency,
        "paid Checkout Session matches no organization or package: no credits, orphan purchase FAILED"
    );
    let metadata = serde_json::to_string(&session.metadata.clone().unwrap_or_default())
        .map_err(|error| crate::ledger::LedgerError::internal(error.to_string()))?;
    stripe_orphan_session::Entity::insert(stripe_orphan_session::ActiveModel {
        checkout_session_id: Set(session.id.clone()),
        status: Set(PurchaseStatus::Failed.as_str().to_owned()),
        reason: Set(reason.to_owned()),
        amount: Set(session.amount_total),
        currency: Set(session.currency.clone()),
        payment_intent_id: Set(expandable_id(&session.payment_intent)),
        client_reference_id: Set(session.client_reference_id.clone()),
        metadata: Set(metadata),
        created_at: Set(at),
    })
    .on_conflict(OnConflict::column(stripe_orphan_session::Column::CheckoutSessionId).do_nothing().to_owned())
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Moves a purchase from one of `from` to `to`; false when it was in no such status.
async fn set_status<C: ConnectionTrait>(
    conn: &C,
    purchase_id: &str,
    from: &[PurchaseStatus],
    to: PurchaseStatus,
    payment_intent: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, BillingError> {
    let mut update = credit_purchase::Entity::update_many()
        .col_expr(credit_purchase::Column::Status, Expr::value(to.as_str()))
        .col_expr(credit_purchase::Column::UpdatedAt, Expr::value(at));
    if let Some(payment_intent) = payment_intent {
        update = update.col_expr(credit_purchase::Column::PaymentIntentId, Expr::value(payment_intent));
    }
    let result = update
        .filter(credit_purchase::Column::Id.eq(purchase_id))
        .filter(credit_purchase::Column::Status.is_in(from.iter().map(|status| status.as_str())))
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

/// What a purchase event's body says of the purchase: its id, package, credits and status.
pub(super) fn purchase_fields(
    purchase: &CreditPurchase,
    status: PurchaseStatus,
) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("purchaseId".into(), purchase.id.clone().into());
    fields.insert("packageId".into(), purchase.package_id.clone().into());
    fields.insert("credits".into(), purchase.credits.into());
    fields.insert("status".into(), status.as_str().into());
    fields
}

/// Raises a purchase event about `purchase`, now `status`, in `tx`.
pub(super) async fn raise(
    tx: &mut LedgerTx,
    purchase: &CreditPurchase,
    kind: EventType,
    status: PurchaseStatus,
) -> Result<(), BillingError> {
    Ok(tx.raise(&purchase.organization_id, kind, purchase_fields(purchase, status)).await?)
}
