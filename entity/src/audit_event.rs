//! One change of money or access, as the audit log keeps it (append-only).

use sea_orm::entity::prelude::*;

/// A row of `audit_events`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// `aud_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The organization it concerns; none for a change of every organization's.
    pub organization_id: Option<String>,
    /// `ADMIN`, `API_KEY`, `CLIENT_SESSION`, `STRIPE` or `SYSTEM`.
    pub actor_type: String,
    /// The key's or session's id, when one acted.
    pub actor_id: Option<String>,
    /// What was done, e.g. `GRANT_CREDITS`.
    pub action: String,
    /// The id of what it was done to.
    pub target_id: Option<String>,
    /// The input, without secrets, as JSON.
    pub details: String,
    /// Where the request came from.
    pub client_address: Option<String>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// When.
    pub created_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
