//! An organization: the tenant that owns a balance, transactions and API keys.

use sea_orm::entity::prelude::*;

/// A row of `organizations`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    /// `org_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Balance below which the organization counts as low; `None` when unset.
    pub low_balance_threshold: Option<i64>,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
}

/// Relations of an organization: none declared here. Its balance row points at it
/// (`credit_balance::Relation::Organization`); declaring the way back too would tie the
/// two entity files in a circle, and nothing queries in that direction.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
