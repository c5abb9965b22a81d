//! The usage rollup: what an organization's transactions add up to, per 15-minute slot.

use sea_orm::entity::prelude::*;

/// A row of `credit_usage`: the sums of the transactions created in one slot with one
/// reference type and one API key (`''` for none). Written only by the ledger, in the
/// transaction that writes the transactions it sums.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_usage")]
pub struct Model {
    /// The organization.
    #[sea_orm(primary_key, auto_increment = false)]
    pub organization_id: String,
    /// The slot's first instant (UTC, a multiple of 15 minutes).
    #[sea_orm(primary_key, auto_increment = false)]
    pub slot_start: ChronoDateTimeUtc,
    /// The transactions' `reference_type`, `''` for none.
    #[sea_orm(primary_key, auto_increment = false)]
    pub reference_type: String,
    /// The API key that made them (directly or through a client session), `''` for none.
    #[sea_orm(primary_key, auto_increment = false)]
    pub api_key_id: String,
    /// Credits consumed (captures included), as a positive number.
    pub consumed: i64,
    /// Credits purchased, granted or adjusted upwards.
    pub added: i64,
    /// Credits that expired or were voided, as a positive number.
    pub expired: i64,
    /// Credits refunded, as a positive number.
    pub refunded: i64,
    /// Transactions of every kind.
    pub transactions: i64,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
