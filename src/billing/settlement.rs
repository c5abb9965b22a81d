//! Refunds and disputes as one rule. What a paid purchase has taken back is, at every
//! moment, `min(credits, refunded share + the shares of its disputes whose funds were
//! withdrawn and not reinstated)`, within its own lots and the balance floor; its status
//! follows from the same facts: `REFUNDED` when refunded in full, else `DISPUTED` while a
//! dispute holds funds, else `PARTIALLY_REFUNDED`, else `PAID`.
//!
//! Stripe does not deliver in order, and a rule per event (a refund takes its share of
//! what is left, a reinstatement gives back what its dispute took) ends differently in
//! different orders: a full refund between a withdrawal and its reinstatement took
//! nothing, and the reinstatement then gave the refunded credits back. So deliveries only
//! record what Stripe reported (the cumulative refund in `stripe_refunds`, a dispute's
//! row in `stripe_disputes`) and then call [`Billing::settle`], which compares the amount
//! these reports imply with the amount the purchase was last settled at and writes the
//! difference: a `REFUND` when it grew, an `ADJUSTMENT` when it shrank. Both amounts are
//! functions of the set of facts, not of their order, so every order of delivery ends in
//! the same balance and status. Credits spent meanwhile are the one exception, by
//! policy: a clawback never goes below a zero balance, and what it could not take is
//! forgiven, not collected by a later report.
//!
//! What was settled is kept in the rows the reports live in: the refund applied in
//! `credit_purchases.refunded_amount`, the disputes applied in state `WITHDRAWN`. A
//! dispute only moves forward: `PENDING` (reported, purchase not paid yet) → `WITHDRAWN`
//! (counted) → `REINSTATED`; or straight to `REINSTATED` when its reinstatement is seen
//! first, which then means it never counts.
//!
//! An auto top-up's charge settles by the same rule ([`Paid`]): its applied refund is
//! kept on the top-up, its clawbacks reference it, and its status stays `SUCCEEDED`.
//!
//! Every event of a PaymentIntent first locks that PaymentIntent's `stripe_refunds` row
//! ([`record_refund`]), so a settlement decides against state no concurrent delivery can
//! change until commit.

use entity::{credit_purchase, stripe_dispute, stripe_refund};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::topups::TOP_UP_REFERENCE;
use super::{Billing, BillingError, PURCHASE_REFERENCE, PurchaseStatus};
use crate::ledger::topups::CreditTopUp;
use crate::ledger::{AuditAction, ChangeRequest, DEFAULT_PRIORITY, EventType, LedgerError, LedgerTx, TransactionKind};
use crate::ledger::{LotCategory, LotSpec};

/// Where one dispute stands, as stored in `stripe_disputes.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DisputeState {
    /// Funds withdrawn, not counted yet: the purchase is not paid (known) yet.
    Pending,
    /// Counted: the dispute holds back its share of the purchase's credits.
    Withdrawn,
    /// Final: the dispute no longer counts (or never did).
    Reinstated,
}

impl DisputeState {
    /// The name stored in the database.
    pub(super) fn as_str(self) -> &'static str {
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

impl Billing {
    /// Brings the purchase paid through `payment_intent` to what the reports recorded so
    /// far imply, `reinstated` naming a dispute whose reinstatement this delivery reports
    /// (written here, after the applied state is read). A payment without a paid purchase
    /// is left alone: its paid event settles it. The caller has locked the PaymentIntent
    /// ([`record_refund`]).
    pub(super) async fn settle(
        &self,
        tx: &mut LedgerTx,
        payment_intent: &str,
        reinstated: Option<&str>,
    ) -> Result<(), BillingError> {
        // Read before the reinstatement is written: which withdrawals were counted.
        let disputes = stripe_dispute::Entity::find()
            .filter(stripe_dispute::Column::PaymentIntentId.eq(payment_intent))
            .order_by_asc(stripe_dispute::Column::Id)
            .all(tx.conn())
            .await?
            .into_iter()
            .map(|row| Ok((DisputeState::parse(&row.state)?, row)))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        if let Some(dispute_id) = reinstated {
            // Final even when the purchase is not paid yet: then it never counts.
            stripe_dispute::Entity::update_many()
                .col_expr(stripe_dispute::Column::State, Expr::value(DisputeState::Reinstated.as_str()))
                .col_expr(stripe_dispute::Column::UpdatedAt, Expr::value(tx.at()))
                .filter(stripe_dispute::Column::Id.eq(dispute_id))
                .filter(stripe_dispute::Column::State.ne(DisputeState::Reinstated.as_str()))
                .exec(tx.conn())
                .await?;
        }
        let Some(paid) = Paid::through(tx, payment_intent).await? else {
            // Not paid yet (or not ours).
            return Ok(());
        };
        let reported = stripe_refund::Entity::find_by_id(payment_intent.to_owned())
            .one(tx.conn())
            .await?
            .map_or(0, |row| row.amount_refunded);
        let (credits, amount) = (paid.credits(), paid.amount().max(0));
        let applied_refund = paid.refunded_amount().clamp(0, amount);
        let refunded = reported.clamp(0, amount).max(applied_refund);
        let counted = disputes.iter().filter(|(state, _)| *state == DisputeState::Withdrawn);
        let before = held_back(credits, amount, applied_refund, counted.map(|(_, row)| row.amount));
        let holding: Vec<&stripe_dispute::Model> = disputes
            .iter()
            .filter(|(state, row)| {
                matches!(state, DisputeState::Pending | DisputeState::Withdrawn) && Some(row.id.as_str()) != reinstated
            })
            .map(|(_, row)| row)
            .collect();
        let after = held_back(credits, amount, refunded, holding.iter().map(|row| row.amount));
        let settled = settled_status(amount, refunded, !holding.is_empty());

        // The facts now count as settled.
        let mut counted_now = Vec::new();
        for row in holding.iter().filter(|row| row.state == DisputeState::Pending.as_str()) {
            stripe_dispute::Entity::update_many()
                .col_expr(stripe_dispute::Column::State, Expr::value(DisputeState::Withdrawn.as_str()))
                .col_expr(stripe_dispute::Column::PurchaseId, Expr::value(paid.id().to_owned()))
                .col_expr(stripe_dispute::Column::AccountedCredits, Expr::value(share(credits, row.amount, amount)))
                .col_expr(stripe_dispute::Column::UpdatedAt, Expr::value(tx.at()))
                .filter(stripe_dispute::Column::Id.eq(&row.id))
                .filter(stripe_dispute::Column::State.eq(DisputeState::Pending.as_str()))
                .exec(tx.conn())
                .await?;
            counted_now.push(row.id.as_str());
        }
        paid.record(tx, refunded, settled).await?;

        // The difference, and only the difference, goes to the ledger.
        let (reference, organization_id) = (paid.reference(), paid.organization_id());
        let (noun, id) = (paid.noun(), paid.id());
        if after != before || refunded != applied_refund {
            let details = serde_json::json!({
                "paymentIntentId": payment_intent,
                "refunded": refunded,
                "heldBackBefore": before,
                "heldBackAfter": after,
                "disputesCounted": counted_now,
                "reinstated": reinstated,
            });
            tx.audit(Some(organization_id), AuditAction::SettlePayment, Some(id), details);
        }
        if after > before {
            let wanted = after - before;
            let cause = clawback_cause(refunded > applied_refund, &counted_now);
            let description = format!("{cause} of {noun} {id}: {wanted} credits");
            // From its own lots only (see `LedgerTx::clawback`).
            let taken = tx.clawback(organization_id, wanted, &description, reference).await?;
            if taken.shortfall > 0 {
                tracing::warn!(
                    %noun,
                    %id,
                    taken = taken.taken,
                    shortfall = taken.shortfall,
                    "clawback: credits already spent were not recovered"
                );
            }
        } else if after < before {
            // Never more than was really taken: credits spent before a clawback were not.
            let given_back = tx.clawed_back(organization_id, reference).await? - after;
            if given_back > 0 {
                // The credits come back as they were: the paid lot's category, priority
                // and expiry (an expiry already past means they expire at once).
                let lot = match tx.lot_of_purchase(organization_id, reference).await? {
                    Some(lot) => LotSpec { category: lot.category, priority: lot.priority, expires_at: lot.expires_at },
                    None => LotSpec { category: LotCategory::Paid, priority: DEFAULT_PRIORITY, expires_at: None },
                };
                let cause = match reinstated {
                    Some(dispute) => format!("Dispute {dispute} of {noun}"),
                    None => paid.capitalized_noun().to_owned(),
                };
                let request = ChangeRequest {
                    organization_id: organization_id.to_owned(),
                    kind: TransactionKind::Adjustment,
                    delta: given_back,
                    description: Some(format!("{cause} {id} reinstated: {given_back} credits given back")),
                    reference_type: Some(reference.0.into()),
                    reference_id: Some(id.to_owned()),
                    idempotency_key: None,
                    lot: Some(lot),
                    by: Default::default(),
                };
                tx.change(&request).await?;
            }
        }
        tracing::info!(%noun, %id, before, after, status = settled.as_str(), "payment settled");
        // What the application's backend hears of it: a purchase's own events. A top-up
        // has none for refunds and disputes; its clawback is a `REFUND` transaction, and
        // the balance events of that change fire as for any other.
        let Paid::Purchase(purchase) = paid else {
            return Ok(());
        };
        let raised = [
            (refunded > applied_refund, EventType::PurchaseRefunded),
            (!counted_now.is_empty(), EventType::PurchaseDisputed),
            (reinstated.is_some(), EventType::PurchaseReinstated),
        ];
        if raised.iter().any(|(happened, _)| *happened) {
            let purchase = super::CreditPurchase::try_from(purchase)?;
            for (_, kind) in raised.into_iter().filter(|(happened, _)| *happened) {
                super::payment_events::raise(tx, &purchase, kind, settled).await?;
            }
        }
        Ok(())
    }
}

/// What was paid through one PaymentIntent: a Checkout purchase or an auto top-up. Both
/// settle refunds and disputes by the same rule; each keeps its applied refund in its own
/// row, and only a purchase has a status that follows (a top-up stays `SUCCEEDED`).
enum Paid {
    Purchase(credit_purchase::Model),
    TopUp(CreditTopUp),
}

impl Paid {
    /// What was paid through `payment_intent` and credited, if anything was.
    async fn through(tx: &mut LedgerTx, payment_intent: &str) -> Result<Option<Self>, BillingError> {
        let purchase = credit_purchase::Entity::find()
            .filter(credit_purchase::Column::PaymentIntentId.eq(payment_intent))
            .one(tx.conn())
            .await?;
        if let Some(purchase) = purchase {
            let paid = PurchaseStatus::parse(&purchase.status)?.was_paid();
            return Ok(paid.then_some(Self::Purchase(purchase)));
        }
        Ok(tx.paid_top_up_of_payment(payment_intent).await?.map(Self::TopUp))
    }

    fn id(&self) -> &str {
        match self {
            Self::Purchase(purchase) => &purchase.id,
            Self::TopUp(top_up) => &top_up.id,
        }
    }

    fn organization_id(&self) -> &str {
        match self {
            Self::Purchase(purchase) => &purchase.organization_id,
            Self::TopUp(top_up) => &top_up.organization_id,
        }
    }

    fn credits(&self) -> i64 {
        match self {
            Self::Purchase(purchase) => purchase.credits,
            Self::TopUp(top_up) => top_up.credits,
        }
    }

    fn amount(&self) -> i64 {
        match self {
            Self::Purchase(purchase) => purchase.amount,
            Self::TopUp(top_up) => top_up.amount,
        }
    }

    fn refunded_amount(&self) -> i64 {
        match self {
            Self::Purchase(purchase) => purchase.refunded_amount,
            Self::TopUp(top_up) => top_up.refunded_amount,
        }
    }

    /// The reference its credits carry in the ledger.
    fn reference(&self) -> (&'static str, &str) {
        match self {
            Self::Purchase(purchase) => (PURCHASE_REFERENCE, &purchase.id),
            Self::TopUp(top_up) => (TOP_UP_REFERENCE, &top_up.id),
        }
    }

    fn noun(&self) -> &'static str {
        match self {
            Self::Purchase(_) => "purchase",
            Self::TopUp(_) => "top-up",
        }
    }

    fn capitalized_noun(&self) -> &'static str {
        match self {
            Self::Purchase(_) => "Purchase",
            Self::TopUp(_) => "Top-up",
        }
    }

    /// Keeps what this settlement applied: the refund (both) and the status (a purchase).
    async fn record(&self, tx: &mut LedgerTx, refunded: i64, settled: PurchaseStatus) -> Result<(), BillingError> {
        match self {
            Self::Purchase(purchase) => {
                if refunded == purchase.refunded_amount && settled.as_str() == purchase.status {
                    return Ok(());
                }
                credit_purchase::Entity::update_many()
                    .col_expr(credit_purchase::Column::RefundedAmount, Expr::value(refunded))
                    .col_expr(
                        credit_purchase::Column::RefundedCredits,
                        Expr::value(share(purchase.credits, refunded, purchase.amount.max(0))),
                    )
                    .col_expr(credit_purchase::Column::Status, Expr::value(settled.as_str()))
                    .col_expr(credit_purchase::Column::UpdatedAt, Expr::value(tx.at()))
                    .filter(credit_purchase::Column::Id.eq(&purchase.id))
                    .exec(tx.conn())
                    .await?;
            }
            Self::TopUp(top_up) if refunded != top_up.refunded_amount => {
                tx.set_top_up_refunded(&top_up.id, refunded).await?;
            }
            Self::TopUp(_) => {}
        }
        Ok(())
    }
}

/// What a purchase of `credits` for `paid` holds back when `refunded` of it is refunded
/// and disputes of `disputed` amounts hold funds: the sum of their shares, at most its
/// credits. The rule, in one place.
pub(super) fn held_back(credits: i64, paid: i64, refunded: i64, disputed: impl IntoIterator<Item = i64>) -> i64 {
    disputed
        .into_iter()
        .map(|amount| share(credits, amount, paid))
        .fold(share(credits, refunded, paid), i64::saturating_add)
        .min(credits.max(0))
}

/// `credits × part ÷ whole`, rounded down, without overflow (`part` ≤ `whole`, `whole` > 0).
pub(super) fn share(credits: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let exact = i128::from(credits) * i128::from(part.clamp(0, whole)) / i128::from(whole);
    // Never more than `credits`, so it fits.
    i64::try_from(exact).unwrap_or(credits)
}

/// The status of a paid purchase from what happened to it since: refunded in full, else
/// disputed while any dispute holds funds, else refunded in part, else paid. Computed
/// from the facts rather than remembered, so it does not depend on their order either.
pub(super) fn settled_status(paid: i64, refunded: i64, disputed: bool) -> PurchaseStatus {
    if refunded >= paid && refunded > 0 {
        PurchaseStatus::Refunded
    } else if disputed {
        PurchaseStatus::Disputed
    } else if refunded > 0 {
        PurchaseStatus::PartiallyRefunded
    } else {
        PurchaseStatus::Paid
    }
}

/// What a clawback is for, as its description names it: the refund, the disputes counted
/// by this settlement (`dp_…`), or both.
fn clawback_cause(refund_grew: bool, disputes: &[&str]) -> String {
    match (refund_grew, disputes.join(", ")) {
        (true, disputes) if !disputes.is_empty() => format!("Refund and dispute {disputes}"),
        (false, disputes) if !disputes.is_empty() => format!("Dispute {disputes}"),
        _ => "Refund".to_owned(),
    }
}

/// Records the cumulative amount Stripe reports refunded for a PaymentIntent, keeping the
/// largest seen (older deliveries cannot lower it), and locks that row until commit.
///
/// The paid, refunded and dispute paths all call this first (the others with 0), so the
/// events of one PaymentIntent serialize on this row: whichever commits second sees the
/// other's work, and a refund or dispute racing its own payment is never lost.
pub(super) async fn record_refund<C: ConnectionTrait>(
    conn: &C,
    payment_intent: &str,
    amount_refunded: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), BillingError> {
    stripe_refund::Entity::insert(stripe_refund::ActiveModel {
        payment_intent_id: Set(payment_intent.to_owned()),
        amount_refunded: Set(amount_refunded),
        updated_at: Set(at),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_down_and_never_exceed_the_credits() {
        assert_eq!(share(55_000, 2_000, 3_999), 27_506);
        assert_eq!(share(55_000, 3_999, 3_999), 55_000);
        assert_eq!(share(55_000, 9_999, 3_999), 55_000);
        assert_eq!(share(i64::MAX, i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(share(10, 5, 0), 0);
    }

    #[test]
    fn a_purchase_holds_back_its_refunded_and_disputed_shares_at_most_its_credits() {
        assert_eq!(held_back(55_000, 3_999, 0, []), 0);
        assert_eq!(held_back(55_000, 3_999, 2_000, []), 27_506);
        assert_eq!(held_back(55_000, 3_999, 1_000, [1_500]), 13_753 + 20_630);
        assert_eq!(held_back(55_000, 3_999, 2_500, [3_000]), 55_000);
        assert_eq!(held_back(55_000, 3_999, 3_999, [3_999, 3_999]), 55_000);
        assert_eq!(held_back(i64::MAX, i64::MAX, i64::MAX, [i64::MAX]), i64::MAX);
        assert_eq!(held_back(55_000, 0, 10, [10]), 0);
    }

    #[test]
    fn a_paid_purchase_is_refunded_then_disputed_then_partially_refunded_then_paid() {
        assert_eq!(settled_status(999, 0, false), PurchaseStatus::Paid);
        assert_eq!(settled_status(999, 500, false), PurchaseStatus::PartiallyRefunded);
        assert_eq!(settled_status(999, 500, true), PurchaseStatus::Disputed);
        assert_eq!(settled_status(999, 0, true), PurchaseStatus::Disputed);
        assert_eq!(settled_status(999, 999, false), PurchaseStatus::Refunded);
        assert_eq!(settled_status(999, 999, true), PurchaseStatus::Refunded);
    }

    #[test]
    fn a_clawback_names_what_it_is_for() {
        assert_eq!(clawback_cause(true, &[]), "Refund");
        assert_eq!(clawback_cause(false, &[]), "Refund");
        assert_eq!(clawback_cause(false, &["dp_1"]), "Dispute dp_1");
        assert_eq!(clawback_cause(true, &["dp_1", "dp_2"]), "Refund and dispute dp_1, dp_2");
    }
}
