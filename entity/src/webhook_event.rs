//! An outgoing event: written in the same transaction as the change it describes.

use sea_orm::entity::prelude::*;

/// A row of `webhook_events`. Rows are inserted, and updated only to mark an older
/// version's event fanned out.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    /// `evt_…`: the `webhook-id` of every delivery of it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The organization it is about.
    pub organization_id: String,
    /// `credits.balance.low`, `credits.granted`, …
    #[sea_orm(column_name = "type")]
    pub event_type: String,
    /// The body sent, as JSON.
    pub payload: String,
    /// Commit time of its change.
    pub created_at: ChronoDateTimeUtc,
    /// Whether its deliveries (one per matching endpoint) are written.
    pub fanned_out: bool,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
