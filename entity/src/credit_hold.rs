//! A hold: credits reserved for work whose cost is known only when it ends.

use sea_orm::entity::prelude::*;

/// A row of `credit_holds`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_holds")]
pub struct Model {
    /// `hld_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning organization.
    pub organization_id: String,
    /// Credits reserved.
    pub amount: i64,
    /// Credits captured, once captured.
    pub captured: Option<i64>,
    /// `ACTIVE`, `CAPTURED`, `RELEASED` or `EXPIRED`.
    pub status: String,
    /// What for.
    pub description: String,
    /// What the work is about.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// Client-chosen key; shares the namespace of consumes' keys.
    pub idempotency_key: Option<String>,
    /// The capture's `CONSUMPTION` transaction.
    pub transaction_id: Option<String>,
    /// Where the credits are reserved, in draw order: a JSON array of
    /// `{"lot": "lot_…", "amount": n}` summing to `amount` (`"lot": null`: the overdraft).
    pub allocations: String,
    /// When it expires by itself.
    pub expires_at: ChronoDateTimeUtc,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// Latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// Relations of a hold (none navigated).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
