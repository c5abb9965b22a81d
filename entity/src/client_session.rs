//! A client session: a short-lived, scoped token for a browser, stored as a SHA-256 hash.

use sea_orm::entity::prelude::*;

/// A row of `client_sessions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_sessions")]
pub struct Model {
    /// `cses_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The organization the session acts for.
    pub organization_id: String,
    /// The API key that created it; null when the admin token did.
    pub created_by_key_id: Option<String>,
    /// Hex SHA-256 of the whole token.
    pub token_hash: String,
    /// Comma-separated scope names, e.g. `READ,PURCHASE`.
    pub scopes: String,
    /// After this instant the token authenticates nothing.
    pub expires_at: ChronoDateTimeUtc,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// When it was revoked (directly, or with its API key).
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

/// Relations of a client session.
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
