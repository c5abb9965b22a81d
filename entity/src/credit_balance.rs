//! The current balance of one organization, changed only by the ledger.

use sea_orm::entity::prelude::*;

/// A row of `credit_balances`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credit_balances")]
pub struct Model {
    /// `bal_…`, stable per organization.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning organization (unique).
    pub organization_id: String,
    /// The sum of the organization's transactions; never below `−overdraft_limit`.
    pub balance: i64,
    /// Credits reserved by active holds.
    pub held: i64,
    /// How far below zero the balance may go.
    pub overdraft_limit: i64,
    /// The earliest lot expiry or hold TTL still to be written (for the sweeper).
    pub next_event_at: Option<ChronoDateTimeUtc>,
    /// Number of changes applied so far; the `seq` of the latest transaction.
    pub version: i64,
    /// Raised by every write that changes the organization's balance, lots, holds or
    /// overdraft limit (what a committer's kept state is checked against).
    pub generation: i64,
    /// The `seq` of the organization's oldest lot with credits remaining (past the latest
    /// change when none has): where reading its open lots starts. Lots only ever empty,
    /// and a new lot's `seq` is above every earlier one.
    pub open_lots_from: i64,
    /// The organization's low-balance threshold (kept with `organizations`' own), from
    /// which the write path decides `credits.balance.low`.
    pub low_balance_threshold: Option<i64>,
    /// Below which `available` a committed change starts an auto top-up; null while none
    /// may start (off, paused, no card, one pending, the month's limit reached).
    pub auto_top_up_below: Option<i64>,
    /// Time of the latest change.
    pub updated_at: ChronoDateTimeUtc,
}

/// Relations of a balance.
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

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
