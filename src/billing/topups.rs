//! Auto top-up's payments: the worker that charges each top-up the write path started
//! (one PaymentIntent, its `Idempotency-Key` the top-up id, so a crash, a retry or a
//! second replica never charges twice), and crediting it exactly once from whichever
//! report of the payment comes first: the create answer or `payment_intent.succeeded`.
//! A decline or 3-D Secure ends it and pauses auto top-up; a Stripe error or timeout
//! leaves it pending, tried again with the same key. A refund or a dispute of a top-up's
//! charge claws back as for a purchase (`settlement`).

use std::time::Duration;

use super::settlement::record_refund;
use super::stripe::{ChargeOutcome, TopUpCharge};
use super::{Billing, BillingError};
use crate::ledger::topups::{ClaimedTopUp, TopUpEnd};
use crate::ledger::{AuditAction, ChangeRequest, EventType, LedgerTx, LotCategory, LotSpec, TransactionKind};

/// The reference type of a top-up's `PURCHASE`.
pub const TOP_UP_REFERENCE: &str = "topup";

/// How long a worker's claim on a top-up lasts: beyond any call to Stripe.
const LEASE_SECS: i64 = 120;

/// Waits before calling Stripe again after it failed, by attempts so far.
fn backoff(attempts: i32) -> Duration {
    match attempts {
        0 => Duration::from_secs(5),
        1 => Duration::from_secs(30),
        2 => Duration::from_secs(120),
        3 => Duration::from_secs(600),
        _ => Duration::from_secs(1_800),
    }
}

impl Billing {
    /// Runs the top-up worker until the runtime stops: charges started top-ups when woken
    /// (a commit started one) or every two seconds, and arms auto top-up again where it
    /// may start (a new month, say).
    pub fn start_top_up_worker(&self) {
        let billing = self.clone();
        tokio::spawn(async move {
            let mut rounds: u64 = 0;
            loop {
                tokio::select! {
                    () = billing.ledger.events().top_ups().notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                if let Err(error) = billing.charge_due().await {
                    tracing::warn!(%error, "auto top-up: charging failed; retrying");
                }
                rounds += 1;
                if rounds.is_multiple_of(15)
                    && let Err(error) = billing.rearm().await
                {
                    tracing::warn!(%error, "auto top-up: re-arming failed; retrying");
                }
            }
        });
    }

    async fn charge_due(&self) -> Result<(), BillingError> {
        if self.gateway().is_none() {
            return Ok(());
        }
        loop {
            let claimed = self.ledger.claim_top_ups(8, chrono::Duration::seconds(LEASE_SECS)).await?;
            if claimed.is_empty() {
                return Ok(());
            }
            for top_up in claimed {
                self.charge(top_up).await?;
            }
        }
    }

    /// Charges one claimed top-up and applies what Stripe answered.
    async fn charge(&self, claimed: ClaimedTopUp) -> Result<(), BillingError> {
        let gateway = self.gateway().ok_or(BillingError::NotConfigured)?;
        let top_up = &claimed.top_up;
        let (Some(customer), Some(payment_method)) = (&claimed.customer_id, &claimed.payment_method_id) else {
            let end = TopUpEnd::Failed("no saved card".into());
            return self.end(&top_up.id, None, &end).await;
        };
        let charge = TopUpCharge {
            top_up_id: &top_up.id,
            organization_id: &top_up.organization_id,
            package_id: &top_up.package_id,
            amount: top_up.amount,
            currency: &top_up.currency,
            customer,
            payment_method,
        };
        match gateway.charge(&charge).await {
            Ok(ChargeOutcome::Succeeded { payment_intent }) => self.paid(&top_up.id, &payment_intent).await,
            Ok(ChargeOutcome::Processing { payment_intent }) => {
                // The webhook will say; look again later with the same key.
                let retry_at = self.ledger.now() + chrono::Duration::minutes(10);
                let note = format!("{payment_intent} is processing");
                Ok(self.ledger.retry_top_up(&top_up.id, retry_at, &note).await?)
            }
            Ok(ChargeOutcome::RequiresAction { payment_intent, message }) => {
                self.end(&top_up.id, payment_intent.as_deref(), &TopUpEnd::RequiresAction(message)).await
            }
            Ok(ChargeOutcome::Declined { payment_intent, message }) => {
                self.end(&top_up.id, payment_intent.as_deref(), &TopUpEnd::Failed(message)).await
            }
            Err(error) => {
                tracing::warn!(%error, top_up = %top_up.id, "auto top-up: Stripe failed; retrying with the same key");
                let wait = chrono::Duration::from_std(backoff(top_up.attempts)).unwrap_or_default();
                Ok(self.ledger.retry_top_up(&top_up.id, self.ledger.now() + wait, &error.to_string()).await?)
            }
        }
    }

    /// Credits a paid top-up (once), in a transaction of its own.
    pub(super) async fn paid(&self, top_up_id: &str, payment_intent: &str) -> Result<(), BillingError> {
        crate::ledger::retrying(|| async {
            let mut tx = self.ledger.begin().await?;
            let credited = self.credit_top_up(&mut tx, top_up_id, payment_intent).await;
            tx.finish(credited).await
        })
        .await
    }

    /// Ends a top-up unpaid (once), in a transaction of its own.
    pub(super) async fn end(
        &self,
        top_up_id: &str,
        payment_intent: Option<&str>,
        end: &TopUpEnd,
    ) -> Result<(), BillingError> {
        crate::ledger::retrying(|| async {
            let mut tx = self.ledger.begin().await?;
            let ended = self.end_top_up(&mut tx, top_up_id, payment_intent, end).await;
            tx.finish(ended).await
        })
        .await
    }

    /// Credits the top-up in `tx` if it is still pending: the package's credits as a
    /// `PURCHASE` and a `PAID` lot on its terms, and its event.
    pub(super) async fn credit_top_up(
        &self,
        tx: &mut LedgerTx,
        top_up_id: &str,
        payment_intent: &str,
    ) -> Result<(), BillingError> {
        // Every report of this PaymentIntent serializes on its refund row, so a refund or
        // a dispute racing the crediting is settled by whichever commits second.
        record_refund(tx.conn(), payment_intent, 0, tx.at()).await?;
        let Some(top_up) = tx.take_paid_top_up(top_up_id, payment_intent).await? else {
            return Ok(());
        };
        let expires_at = self
            .catalog
            .get(&top_up.package_id)
            .and_then(|package| package.expires_after_days)
            .map(|days| tx.at() + chrono::Duration::days(days));
        let request = ChangeRequest {
            organization_id: top_up.organization_id.clone(),
            kind: TransactionKind::Purchase,
            delta: top_up.credits,
            description: Some(format!("Auto top-up {} ({})", top_up.id, top_up.package_id)),
            reference_type: Some(TOP_UP_REFERENCE.into()),
            reference_id: Some(top_up.id.clone()),
            idempotency_key: None,
            lot: Some(LotSpec { category: LotCategory::Paid, priority: crate::ledger::DEFAULT_PRIORITY, expires_at }),
            by: Default::default(),
        };
        let (transaction, _, _) = tx.change(&request).await?;
        tx.credited_top_up(&top_up, &transaction.id).await?;
        let details = serde_json::json!({
            "packageId": top_up.package_id,
            "credits": top_up.credits,
            "amount": top_up.amount,
            "currency": top_up.currency,
            "paymentIntentId": payment_intent,
            "transactionId": transaction.id,
        });
        tx.audit(Some(&top_up.organization_id), AuditAction::CompleteTopUp, Some(&top_up.id), details);
        let mut fields = top_up_fields(&top_up.id, "SUCCEEDED", Some(payment_intent));
        fields.insert("transactionId".into(), transaction.id.clone().into());
        fields.insert("credits".into(), top_up.credits.into());
        tx.raise(&top_up.organization_id, EventType::TopupSucceeded, fields).await?;
        tracing::info!(top_up = %top_up.id, credits = top_up.credits, "auto top-up paid and credited");
        // A refund or a dispute may have been reported before the payment.
        self.settle(tx, payment_intent, None).await
    }

    /// Ends the top-up in `tx` if it is still pending, pausing auto top-up.
    pub(super) async fn end_top_up(
        &self,
        tx: &mut LedgerTx,
        top_up_id: &str,
        payment_intent: Option<&str>,
        end: &TopUpEnd,
    ) -> Result<(), BillingError> {
        let Some(top_up) = tx.end_top_up(top_up_id, payment_intent, end).await? else {
            return Ok(());
        };
        let (kind, status, message) = match end {
            TopUpEnd::Failed(message) => (EventType::TopupFailed, "FAILED", message),
            TopUpEnd::RequiresAction(message) => (EventType::TopupRequiresAction, "REQUIRES_ACTION", message),
        };
        let mut fields = top_up_fields(&top_up.id, status, payment_intent);
        fields.insert("failureMessage".into(), message.clone().into());
        tx.raise(&top_up.organization_id, kind, fields).await?;
        tracing::warn!(top_up = %top_up.id, status, %message, "auto top-up not paid; auto top-up paused");
        Ok(())
    }

    /// Arms auto top-up again where it may start (each through the write path, so one
    /// already below its threshold starts at once).
    async fn rearm(&self) -> Result<(), BillingError> {
        for organization_id in self.ledger.top_ups_to_rearm().await? {
            crate::ledger::retrying(|| async {
                let mut tx = self.ledger.begin().await?;
                tx.lock([organization_id.as_str()]).await?;
                let armed = tx.arm_top_up(&organization_id).await;
                tx.finish(armed).await
            })
            .await?;
        }
        Ok(())
    }
}

/// What a top-up event's body says of it.
fn top_up_fields(id: &str, status: &str, payment_intent: Option<&str>) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("topUpId".into(), id.into());
    fields.insert("status".into(), status.into());
    if let Some(payment_intent) = payment_intent {
        fields.insert("paymentIntentId".into(), payment_intent.into());
    }
    fields
}
