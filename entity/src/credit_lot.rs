//! A lot: credits that entered a balance together, drawn in the ledger's draw order.

use sea_orm::entity::prelude::*;

/// A row of `credit_lots`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_lots")]
pub struct Model {
    /// `lot_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning organization.
    pub organization_id: String,
    /// `PAID` or `PROMOTIONAL`.
    pub category: String,
    /// 0–100, lower drawn first.
    pub priority: i32,
    /// Credits it was created with.
    pub original: i64,
    /// Credits still in it, held ones included.
    pub remaining: i64,
    /// The part of `remaining` reserved by active holds.
    pub held: i64,
    /// When its unheld remainder expires.
    pub expires_at: Option<ChronoDateTimeUtc>,
    /// `ACTIVE`, `DEPLETED`, `EXPIRED` or `VOIDED`.
    pub status: String,
    /// The transaction that created it.
    pub source_transaction_id: String,
    /// Creation order: that transaction's sequence number.
    pub seq: i64,
    /// Creation time.
    pub created_at: ChronoDateTimeUtc,
    /// Latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// Relations of a lot (none navigated).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
