//! Where a hold's credits are reserved: one lot (or the overdraft) each.

use sea_orm::entity::prelude::*;

/// A row of `credit_hold_allocations`. Rows are inserted, never updated.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_hold_allocations")]
pub struct Model {
    /// The hold.
    #[sea_orm(primary_key, auto_increment = false)]
    pub hold_id: String,
    /// Position within the hold, from 0 (draw order).
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i32,
    /// The lot, or null for the overdraft.
    pub lot_id: Option<String>,
    /// Credits reserved there.
    pub amount: i64,
}

/// Relations of a hold allocation (none navigated).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
