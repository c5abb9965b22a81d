//! One line of a transaction: the part of it that changed one lot (or the overdraft).

use sea_orm::entity::prelude::*;

/// A row of `credit_allocations`. Rows are inserted, never updated.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_allocations")]
pub struct Model {
    /// The transaction.
    #[sea_orm(primary_key, auto_increment = false)]
    pub transaction_id: String,
    /// Position within the transaction, from 0.
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i32,
    /// The transaction's organization.
    pub organization_id: String,
    /// The lot, or null for overdraft debt.
    pub lot_id: Option<String>,
    /// With the transaction's sign.
    pub amount: i64,
}

/// Relations of an allocation (none navigated).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
