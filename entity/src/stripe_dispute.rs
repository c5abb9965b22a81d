//! A Stripe dispute of a payment, and what it did to the purchase's credits.

use sea_orm::entity::prelude::*;

/// A row of `stripe_disputes`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_disputes")]
pub struct Model {
    /// Stripe's dispute id, `dp_…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The disputed PaymentIntent, `pi_…`.
    pub payment_intent_id: String,
    /// The purchase the withdrawal was applied to, once applied.
    pub purchase_id: Option<String>,
    /// Disputed amount, in the smallest currency unit.
    pub amount: i64,
    /// Currency of the amount.
    pub currency: Option<String>,
    /// `PENDING` (funds withdrawn, purchase not paid yet), `WITHDRAWN` (counted: it holds
    /// back its share of the purchase's credits) or `REINSTATED` (final: no longer counts,
    /// or never did).
    pub state: String,
    /// Its share of the purchase's credits (`credits × amount ÷ paid`), set when counted.
    /// What the purchase holds back is computed from every dispute's amount and its
    /// refunds together (`billing::settlement`), at most its credits.
    pub accounted_credits: i64,
    /// Written only before refunds and disputes became one rule: what this dispute alone
    /// took. 0 since; the ledger's entries under the purchase say what was taken.
    pub taken_credits: i64,
    /// First report.
    pub created_at: ChronoDateTimeUtc,
    /// Latest change of state.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
