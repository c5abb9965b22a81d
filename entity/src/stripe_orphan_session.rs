//! A paid Checkout Session that matched no organization or package: credited nothing.

use sea_orm::entity::prelude::*;

/// A row of `stripe_orphan_sessions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_orphan_sessions")]
pub struct Model {
    /// Stripe Checkout Session id, `cs_…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub checkout_session_id: String,
    /// Always `FAILED`: the purchase cannot be credited.
    pub status: String,
    /// Why the session matched nothing.
    pub reason: String,
    /// Amount paid, in the smallest currency unit.
    pub amount: Option<i64>,
    /// Currency paid.
    pub currency: Option<String>,
    /// The PaymentIntent that paid it.
    pub payment_intent_id: Option<String>,
    /// The session's `client_reference_id`, as the buyer may have set it.
    pub client_reference_id: Option<String>,
    /// The session's metadata, as JSON text.
    pub metadata: String,
    /// When it was recorded.
    pub created_at: ChronoDateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
