//! Usage: what an organization's transactions add up to, for reports.

use chrono::{DateTime, Utc};

use super::TransactionKind;

/// The width of a usage rollup slot, in seconds: every time zone in use today is offset
/// from UTC by whole quarter hours.
pub(crate) const SLOT_SECS: i64 = 900;

/// What some transactions add up to. Every credit amount is a positive number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Credits of `CONSUMPTION` transactions (captures included).
    pub consumed: i64,
    /// Credits of `PURCHASE`, `GRANT` and positive `ADJUSTMENT` transactions.
    pub added: i64,
    /// Credits of `EXPIRY` and `VOID` transactions.
    pub expired: i64,
    /// Credits of `REFUND` transactions.
    pub refunded: i64,
    /// Transactions of every kind.
    pub transactions: i64,
}

impl UsageTotals {
    /// Counts one transaction: the one rule of which kind adds to which sum.
    pub fn count(&mut self, kind: TransactionKind, amount: i64) {
        match kind {
            TransactionKind::Consumption => self.consumed -= amount,
            TransactionKind::Purchase | TransactionKind::Grant => self.added += amount,
            TransactionKind::Adjustment if amount > 0 => self.added += amount,
            TransactionKind::Adjustment => {}
            TransactionKind::Expiry | TransactionKind::Void => self.expired -= amount,
            TransactionKind::Refund => self.refunded -= amount,
        }
        self.transactions += 1;
    }

    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Self) {
        self.consumed += other.consumed;
        self.added += other.added;
        self.expired += other.expired;
        self.refunded += other.refunded;
        self.transactions += other.transactions;
    }
}

/// The first instant of the rollup slot holding `at`.
pub(crate) fn slot_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let start = at.timestamp().div_euclid(SLOT_SECS) * SLOT_SECS;
    DateTime::from_timestamp(start, 0).unwrap_or(at)
}
