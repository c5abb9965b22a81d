//! The latest cumulative refund Stripe reported for one PaymentIntent.

use sea_orm::entity::prelude::*;

/// A row of `stripe_refunds`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_refunds")]
pub struct Model {
    /// Stripe PaymentIntent id, `pi_…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub payment_intent_id: String,
    /// Total refunded so far, in the smallest currency unit.
    pub amount_refunded: i64,
    /// When it last grew.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
