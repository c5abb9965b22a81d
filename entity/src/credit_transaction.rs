//! One immutable change of an organization's balance.

use sea_orm::entity::prelude::*;

/// A row of `credit_transactions`. Rows are inserted, never updated.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_transactions")]
pub struct Model {
    /// `ctx_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The organization whose balance changed.
    pub organization_id: String,
    /// Position in the organization's history: the balance version after this change.
    pub seq: i64,
    /// `PURCHASE`, `CONSUMPTION`, `GRANT`, `REFUND` or `ADJUSTMENT`.
    pub kind: String,
    /// Signed change: negative for consumption and refunds.
    pub amount: i64,
    /// Balance right after this change.
    pub balance_after: i64,
    /// Human-readable reason.
    pub description: Option<String>,
    /// What the change is about, e.g. `ai_image`.
    pub reference_type: Option<String>,
    /// Which one of those, e.g. an image id.
    pub reference_id: Option<String>,
    /// Client-chosen key naming this one operation, unique per organization.
    pub idempotency_key: Option<String>,
    /// The hold a `CONSUMPTION` captured.
    pub hold_id: Option<String>,
    /// The lots it changed, in draw order: a JSON array of `{"lot": "lot_…", "amount": n}`
    /// summing to `amount` (`"lot": null` is the overdraft debt).
    pub allocations: Option<String>,
    /// The API key that made it (directly, or the key that minted the client session).
    pub api_key_id: Option<String>,
    /// The client session that made it.
    pub client_session_id: Option<String>,
    /// Commit time (for an `EXPIRY`, the lot's expiry).
    pub created_at: ChronoDateTimeUtc,
}

/// Relations of a transaction.
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
