//! An organization's balance.

use chrono::{DateTime, Utc};
use entity::credit_balance;

/// An organization's balance at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    /// `bal_…`, stable per organization.
    pub id: String,
    /// Whose.
    pub organization_id: String,
    /// The sum of the organization's transactions.
    pub balance: i64,
    /// Credits reserved by active holds.
    pub held: i64,
    /// `balance − held`, minus any expired remainder not yet written.
    pub available: i64,
    /// How far below zero the balance may go.
    pub overdraft_limit: i64,
    /// Number of changes so far.
    pub version: i64,
    /// Time of the latest change.
    pub updated_at: DateTime<Utc>,
    /// The earliest lot expiry or hold TTL not yet settled.
    pub next_event_at: Option<DateTime<Utc>>,
}

impl Balance {
    /// `available + overdraft_limit`.
    pub fn spendable(&self) -> i64 {
        self.available + self.overdraft_limit
    }
}

impl From<credit_balance::Model> for Balance {
    /// As stored: exact while `next_event_at` is in the future (see `Ledger::balance`).
    fn from(row: credit_balance::Model) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            balance: row.balance,
            held: row.held,
            available: row.balance - row.held,
            overdraft_limit: row.overdraft_limit,
            version: row.version,
            updated_at: row.updated_at,
            next_event_at: row.next_event_at,
        }
    }
}
