//! An endpoint an application registered to receive outgoing webhooks.

use sea_orm::entity::prelude::*;

/// A row of `webhook_endpoints`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    /// `whe_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Whose events; null for every organization's.
    pub organization_id: Option<String>,
    /// Where events are POSTed.
    pub url: String,
    /// Comma-separated event types; empty for every type.
    pub event_types: String,
    /// The owner's note.
    pub description: Option<String>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why it was disabled, when the server disabled it.
    pub disabled_reason: Option<String>,
    /// The signing secret (`whsec_…`).
    pub secret: String,
    /// The secret before the last rotation, signed with too until `previous_secret_until`.
    pub previous_secret: Option<String>,
    /// When the previous secret stops being used.
    pub previous_secret_until: Option<ChronoDateTimeUtc>,
    /// When its deliveries began failing; null after a success.
    pub failing_since: Option<ChronoDateTimeUtc>,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// Latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
