//! One event's delivery to one endpoint, attempted until it succeeds or gives up.

use sea_orm::entity::prelude::*;

/// A row of `webhook_deliveries`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// `whd_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// To which endpoint.
    pub endpoint_id: String,
    /// Which event.
    pub event_id: String,
    /// `PENDING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The HTTP status of the last attempt, when it got one.
    pub last_status_code: Option<i32>,
    /// What went wrong last, when something did.
    pub last_error: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<ChronoDateTimeUtc>,
    /// A dispatcher's claim on the next attempt, until this instant.
    pub leased_until: Option<ChronoDateTimeUtc>,
    /// When a 2xx answered.
    pub delivered_at: Option<ChronoDateTimeUtc>,
    /// Creation time (its event's commit, or a resend).
    pub created_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
