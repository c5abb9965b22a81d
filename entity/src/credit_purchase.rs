//! A credit-package purchase through Stripe Checkout.

use sea_orm::entity::prelude::*;

/// A row of `credit_purchases`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_purchases")]
pub struct Model {
    /// `pur_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The buying organization.
    pub organization_id: String,
    /// The credit package bought.
    pub package_id: String,
    /// `PENDING`, `PAID`, `FAILED`, `EXPIRED`, `REFUNDED`, `PARTIALLY_REFUNDED` or `DISPUTED`.
    pub status: String,
    /// Credits the purchase adds (package credits plus bonus).
    pub credits: i64,
    /// Price in the currency's smallest unit.
    pub amount: i64,
    /// ISO currency code, lower case.
    pub currency: String,
    /// Stripe Checkout Session id.
    pub checkout_session_id: String,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// Stripe PaymentIntent that paid it, once paid.
    pub payment_intent_id: Option<String>,
    /// Amount refunded so far, in the currency's smallest unit, as last settled.
    pub refunded_amount: i64,
    /// The refunded share of its credits (`credits × refunded_amount ÷ amount`, rounded
    /// down), which refunds hold back, taken or already spent. Disputes add theirs, at
    /// most its credits in all (`billing::settlement`).
    pub refunded_credits: i64,
    /// Time of the latest status change.
    pub updated_at: ChronoDateTimeUtc,
}

/// Relations of a purchase.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The owning organization.
    #[sea_orm(
        belongs_to = "super::organization::Entity",
        from = "Column::OrganizationId",
        to = "super::organization::Column::Id"
    )]
    Organization,
}

impl ActiveModelBehavior for ActiveModel {}
