//! A Stripe webhook event that has been applied.

use sea_orm::entity::prelude::*;

/// A row of `stripe_events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_events")]
pub struct Model {
    /// Stripe's event id, `evt_…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The event type, e.g. `checkout.session.completed`.
    pub event_type: String,
    /// When it was applied.
    pub processed_at: ChronoDateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
