//! Disputed payments: `charge.dispute.funds_withdrawn` and
//! `charge.dispute.funds_reinstated` are recorded here, once per dispute id, and counted
//! by the purchase's one rule for refunds and disputes (`settlement.rs`): a dispute whose
//! funds were withdrawn and not reinstated holds back its share of the purchase's
//! credits, in any order of delivery, and a dispute reported before its payment counts
//! when the payment comes.

use entity::stripe_dispute;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};

use super::settlement::{DisputeState, record_refund};
use super::webhook::{DisputeObject, expandable_id};
use super::{Billing, BillingError};
use crate::ledger::LedgerTx;

/// A dispute event as reported by Stripe.
pub(super) enum DisputeReport {
    /// `charge.dispute.funds_withdrawn`.
    Withdrawn(DisputeObject),
    /// `charge.dispute.funds_reinstated`.
    Reinstated(DisputeObject),
}

impl Billing {
    /// Records a dispute report and settles its purchase by what it changes.
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
        record_refund(tx.conn(), &payment_intent, 0, tx.at()).await?;
        let at = tx.at();
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
                    // Reported before (maybe already reinstated): a dispute counts once.
                    return Ok(());
                }
                tracing::warn!(dispute = %dispute.id, %payment_intent, amount = dispute.amount, status = ?dispute.status, "dispute: funds withdrawn");
                self.settle(tx, &payment_intent, None).await
            }
            DisputeReport::Reinstated(_) if inserted > 0 => {
                // Seen before any withdrawal: the row is final, so a late withdrawal
                // finds it and never counts.
                tracing::info!(dispute = %dispute.id, "dispute reinstated before any withdrawal was seen; nothing to do");
                Ok(())
            }
            DisputeReport::Reinstated(_) => {
                tracing::info!(dispute = %dispute.id, %payment_intent, "dispute: funds reinstated");
                self.settle(tx, &payment_intent, Some(&dispute.id)).await
            }
        }
    }
}
