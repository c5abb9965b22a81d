//! Disputed payments. `charge.dispute.funds_withdrawn` takes back the disputed share of
//! the purchase's credits like a refund does; `charge.dispute.funds_reinstated` gives back
//! exactly what that dispute took. Each happens once per dispute id, in any order of
//! delivery, and a dispute reported before its payment is applied when the payment comes.
//!
//! Each dispute is one `stripe_disputes` row that only moves forward:
//! `PENDING` (funds withdrawn, purchase not paid yet) → `WITHDRAWN` (credits taken) →
//! `REINSTATED`; or straight to `REINSTATED` when the reinstatement is seen first, which
//! then means nothing is ever taken. Every event of one PaymentIntent first locks its
//! `stripe_refunds` row (as the paid and refunded paths do), so the decisions below are
//! made against state no concurrent delivery can change until commit.

use entity::{credit_purchase, stripe_dispute};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::payment_events::{record_refund, set_status, settled_status, share};
use super::webhook::{DisputeObject, expandable_id};
use super::{Billing, BillingError, PURCHASE_REFERENCE, PurchaseStatus};
use crate::ledger::decide::{LotCategory, LotSpec};
use crate::ledger::{ChangeRequest, DEFAULT_PRIORITY, LedgerError, LedgerTx, TransactionKind, now};

/// A dispute event as reported by Stripe.
pub(super) enum DisputeReport {
    /// `charge.dispute.funds_withdrawn`.
    Withdrawn(DisputeObject),
    /// `charge.dispute.funds_reinstated`.
    Reinstated(DisputeObject),
}

/// Where one dispute stands, as stored in `stripe_disputes.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DisputeState {
    /// Funds withdrawn, but the purchase is not paid (known) yet.
    Pending,
    /// Credits taken back from the purchase.
    Withdrawn,
    /// Final: what was taken (possibly nothing) was given back.
    Reinstated,
}

impl DisputeState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Withdrawn => "WITHDRAWN",
            Self::Reinstated => "REINSTATED",
        }
    }

    fn parse(value: &str) -> Result<Self, LedgerError> {
        [Self::Pending, Self::Withdrawn, Self::Reinstated]
            .into_iter()
            .find(|state| state.as_str() == value)
            .ok_or_else(|| LedgerError::internal(format!("unknown dispute state {value}")))
    }
}

/// The disputes of one PaymentIntent that hold credits back now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ActiveDisputes {
    /// How many are in `WITHDRAWN`.
    pub count: usize,
    /// The purchase's credits they account for.
    pub credits: i64,
}

/// The withdrawn, not reinstated disputes of `payment_intent`.
pub(super) async fn active_disputes<C: ConnectionTrait>(
    conn: &C,
    payment_intent: &str,
) -> Result<ActiveDisputes, BillingError> {
    let rows = stripe_dispute::Entity::find()
        .filter(stripe_dispute::Column::PaymentIntentId.eq(payment_intent))
        .filter(stripe_dispute::Column::State.eq(DisputeState::Withdrawn.as_str()))
        .all(conn)
        .await?;
    Ok(ActiveDisputes { count: rows.len(), credits: rows.iter().map(|row| row.accounted_credits).sum() })
}

impl Billing {
    /// Records a dispute report and applies what it allows now.
    pub(super) async fn dispute_reported(&self, tx: &mut LedgerTx, report: &DisputeReport) -> Result<(), BillingError> {
        let (dispute, first_state) = match report {
            DisputeReport::Withdrawn(dispute) => (dispute, DisputeState::Pending),
            DisputeReport::Reinstated(dispute) => (dispute, DisputeState::Reinstated),
        };
        let Some(payment_intent) = expandable_id(&dispute.payment_intent) else {
            tracing::warn!(dispute = %dispute.id, charge = ?expandable_id(&dispute.charge), "dispute without a PaymentIntent; ignored");
            return Ok(());
        };
        // Serializes with the payment's and refunds' events of this PaymentIntent.
        record_refund(tx.conn(), &payment_intent, 0).await?;
        let at = now();
        let inserted = stripe_dispute::Entity::insert(stripe_dispute::ActiveModel {
            id: Set(dispute.id.clone()),
            payment_intent_id: Set(payment_intent.clone()),
            purchase_id: Set(None),
            amount: Set(dispute.amount.max(0)),
            currency: Set(dispute.currency.clone()),
            state: Set(first_state.as_str().to_owned()),
            accounted_credits: Set(0),
            taken_credits: Set(0),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .on_conflict(OnConflict::column(stripe_dispute::Column::Id).do_nothing().to_owned())
        .exec_without_returning(tx.conn())
        .await?;
        match report {
            DisputeReport::Withdrawn(_) => {
                if inserted == 0 {
                    // Reported before (maybe already reinstated): a dispute takes once.
                    return Ok(());
                }
                tracing::warn!(dispute = %dispute.id, %payment_intent, amount = dispute.amount, status = ?dispute.status, "dispute: funds withdrawn");
                self.reconcile_disputes(tx, &payment_intent).await
            }
            DisputeReport::Reinstated(_) if inserted > 0 => {
                // Seen before any withdrawal: the row is final, so a late withdrawal
                // finds it and takes nothing.
                tracing::info!(dispute = %dispute.id, "dispute reinstated before any withdrawal was seen; nothing to do");
                Ok(())
            }
            DisputeReport::Reinstated(_) => self.reinstate(tx, &dispute.id).await,
        }
    }

    /// Applies the pending withdrawals of `payment_intent` once its purchase is paid.
    pub(super) async fn reconcile_disputes(&self, tx: &mut LedgerTx, payment_intent: &str) -> Result<(), BillingError> {
        let pending = stripe_dispute::Entity::find()
            .filter(stripe_dispute::Column::PaymentIntentId.eq(payment_intent))
            .filter(stripe_dispute::Column::State.eq(DisputeState::Pending.as_str()))
            .order_by_asc(stripe_dispute::Column::Id)
            .all(tx.conn())
            .await?;
        for dispute in pending {
            let purchase = credit_purchase::Entity::find()
                .filter(credit_purchase::Column::PaymentIntentId.eq(payment_intent))
                .one(tx.conn())
                .await?;
            let Some(purchase) = purchase else {
                // Not paid yet (or not ours): the paid event applies it.
                return Ok(());
            };
            if !PurchaseStatus::parse(&purchase.status)?.was_paid() {
                return Ok(());
            }
            self.withdraw(tx, &purchase, &dispute).await?;
        }
        Ok(())
    }

    /// Takes back the disputed share of a paid purchase's credits: never more than what
    /// refunds and other disputes left of the purchase, never below a zero balance.
    async fn withdraw(
        &self,
        tx: &mut LedgerTx,
        purchase: &credit_purchase::Model,
        dispute: &stripe_dispute::Model,
    ) -> Result<(), BillingError> {
        let active = active_disputes(tx.conn(), &dispute.payment_intent_id).await?;
        let unaccounted = (purchase.credits - purchase.refunded_credits - active.credits).max(0);
        let wanted = share(purchase.credits, dispute.amount, purchase.amount).clamp(0, unaccounted);
        let updated = stripe_dispute::Entity::update_many()
            .col_expr(stripe_dispute::Column::State, Expr::value(DisputeState::Withdrawn.as_str()))
            .col_expr(stripe_dispute::Column::PurchaseId, Expr::value(purchase.id.clone()))
            .col_expr(stripe_dispute::Column::AccountedCredits, Expr::value(wanted))
            .col_expr(stripe_dispute::Column::UpdatedAt, Expr::value(now()))
            .filter(stripe_dispute::Column::Id.eq(&dispute.id))
            .filter(stripe_dispute::Column::State.eq(DisputeState::Pending.as_str()))
            .exec(tx.conn())
            .await?;
        if updated.rows_affected == 0 {
            return Ok(());
        }
        use PurchaseStatus::{Disputed, Paid, PartiallyRefunded, Refunded};
        set_status(tx.conn(), &purchase.id, &[Paid, PartiallyRefunded, Refunded, Disputed], Disputed, None).await?;
        if wanted == 0 {
            return Ok(());
        }
        let description = format!("Dispute {} of purchase {}: {wanted} credits", dispute.id, purchase.id);
        // From the purchase's own lots only (see `LedgerTx::clawback`).
        let reference = (PURCHASE_REFERENCE, purchase.id.as_str());
        let taken = tx.clawback(&purchase.organization_id, wanted, &description, reference).await?;
        stripe_dispute::Entity::update_many()
            .col_expr(stripe_dispute::Column::TakenCredits, Expr::value(taken.taken))
            .filter(stripe_dispute::Column::Id.eq(&dispute.id))
            .exec(tx.conn())
            .await?;
        tracing::warn!(
            dispute = %dispute.id,
            purchase = %purchase.id,
            taken = taken.taken,
            shortfall = taken.shortfall,
            "dispute: credits taken back"
        );
        Ok(())
    }

    /// Gives back exactly what a withdrawn dispute took, as an `ADJUSTMENT`, and settles
    /// the purchase's status again. Nothing for a dispute that is pending or reinstated.
    async fn reinstate(&self, tx: &mut LedgerTx, dispute_id: &str) -> Result<(), BillingError> {
        let Some(dispute) = stripe_dispute::Entity::find_by_id(dispute_id.to_owned()).one(tx.conn()).await? else {
            return Ok(());
        };
        let state = DisputeState::parse(&dispute.state)?;
        if state == DisputeState::Reinstated {
            return Ok(());
        }
        let updated = stripe_dispute::Entity::update_many()
            .col_expr(stripe_dispute::Column::State, Expr::value(DisputeState::Reinstated.as_str()))
            .col_expr(stripe_dispute::Column::UpdatedAt, Expr::value(now()))
            .filter(stripe_dispute::Column::Id.eq(&dispute.id))
            .filter(stripe_dispute::Column::State.eq(state.as_str()))
            .exec(tx.conn())
            .await?;
        if updated.rows_affected == 0 || state == DisputeState::Pending {
            // Pending: nothing was taken, and now nothing will be.
            return Ok(());
        }
        let Some(purchase_id) = &dispute.purchase_id else {
            return Ok(());
        };
        let Some(purchase) = credit_purchase::Entity::find_by_id(purchase_id.clone()).one(tx.conn()).await? else {
            return Ok(());
        };
        if dispute.taken_credits > 0 {
            // The credits come back as they were: the purchase lot's category, priority
            // and expiry (an expiry already past means they expire at once).
            let reference = (PURCHASE_REFERENCE, purchase.id.as_str());
            let lot = match tx.lot_of_purchase(&purchase.organization_id, reference).await? {
                Some(lot) => LotSpec { category: lot.category, priority: lot.priority, expires_at: lot.expires_at },
                None => LotSpec { category: LotCategory::Paid, priority: DEFAULT_PRIORITY, expires_at: None },
            };
            let request = ChangeRequest {
                organization_id: purchase.organization_id.clone(),
                kind: TransactionKind::Adjustment,
                delta: dispute.taken_credits,
                description: Some(format!(
                    "Dispute {} of purchase {} reinstated: {} credits given back",
                    dispute.id, purchase.id, dispute.taken_credits
                )),
                reference_type: Some(PURCHASE_REFERENCE.into()),
                reference_id: Some(purchase.id.clone()),
                idempotency_key: None,
                lot: Some(lot),
            };
            tx.change(&request).await?;
        }
        let active = active_disputes(tx.conn(), &dispute.payment_intent_id).await?;
        let status = settled_status(purchase.amount, purchase.refunded_amount, active.count > 0);
        set_status(tx.conn(), &purchase.id, &[PurchaseStatus::Disputed], status, None).await?;
        tracing::info!(dispute = %dispute.id, purchase = %purchase.id, given_back = dispute.taken_credits, "dispute reinstated");
        Ok(())
    }
}
