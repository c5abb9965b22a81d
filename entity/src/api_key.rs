//! An organization API key, stored as a SHA-256 hash of its secret only.

use sea_orm::entity::prelude::*;

/// A row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// `key_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The organization the key acts for.
    pub organization_id: String,
    /// Label chosen by the creator.
    pub name: String,
    /// The first characters of the secret, safe to show, to recognize a key.
    pub prefix: String,
    /// Hex SHA-256 of the whole secret.
    pub secret_hash: String,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// Last time a request authenticated with it (updated at most once a minute).
    pub last_used_at: Option<ChronoDateTimeUtc>,
    /// When it was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

/// Relations of an API key.
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
