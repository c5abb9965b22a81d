//! Lots: credits granted or bought together, drawn in order, each with its own terms.

use chrono::{DateTime, Utc};
use entity::credit_lot;

use crate::LedgerError;

/// Paid or promotional credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LotCategory {
    /// Given for free; drawn before paid credits when all else is equal.
    Promotional,
    /// Bought.
    Paid,
}

impl LotCategory {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "PAID",
            Self::Promotional => "PROMOTIONAL",
        }
    }

    /// The category named `value`.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        match value {
            "PAID" => Ok(Self::Paid),
            "PROMOTIONAL" => Ok(Self::Promotional),
            other => Err(LedgerError::internal(format!("unknown lot category {other}"))),
        }
    }
}

/// Where a lot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LotStatus {
    /// Drawable while it has an unheld remainder.
    Active,
    /// Emptied by consumption or clawback.
    Depleted,
    /// Past its `expires_at`; only credits held then remain, until their holds resolve.
    Expired,
    /// Voided; only credits held then remain, until their holds resolve.
    Voided,
}

impl LotStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Depleted => "DEPLETED",
            Self::Expired => "EXPIRED",
            Self::Voided => "VOIDED",
        }
    }

    /// The status named `value`.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        match value {
            "ACTIVE" => Ok(Self::Active),
            "DEPLETED" => Ok(Self::Depleted),
            "EXPIRED" => Ok(Self::Expired),
            "VOIDED" => Ok(Self::Voided),
            other => Err(LedgerError::internal(format!("unknown lot status {other}"))),
        }
    }
}

/// One lot of credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditLot {
    /// `lot_…`
    pub id: String,
    /// Whose.
    pub organization_id: String,
    /// Paid or promotional.
    pub category: LotCategory,
    /// 0–100, lower drawn first.
    pub priority: i32,
    /// Credits it was created with.
    pub original: i64,
    /// Credits still in it (held ones included).
    pub remaining: i64,
    /// The part of `remaining` reserved by active holds.
    pub held: i64,
    /// When its unheld remainder expires, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub status: LotStatus,
    /// The transaction that created it (`ctx_…`).
    pub source_transaction_id: String,
    /// Creation order: the sequence number of that transaction.
    pub seq: i64,
    /// Creation time (= `effectiveAt` in this version).
    pub created_at: DateTime<Utc>,
}

impl CreditLot {
    /// Credits that can be drawn or held now (status only; expiry is settled first).
    pub fn unheld(&self) -> i64 {
        if self.status == LotStatus::Active { self.remaining - self.held } else { 0 }
    }

    /// The draw order: priority, then soonest expiry (none last), promotional before
    /// paid, then creation order, then id.
    pub(crate) fn draw_key(&self) -> (i32, bool, Option<DateTime<Utc>>, LotCategory, i64, &str) {
        (self.priority, self.expires_at.is_none(), self.expires_at, self.category, self.seq, self.id.as_str())
    }
}

/// What a new lot is to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotSpec {
    /// Paid or promotional.
    pub category: LotCategory,
    /// 0–100.
    pub priority: i32,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The default priority of a lot.
pub const DEFAULT_PRIORITY: i32 = 50;

impl Default for LotSpec {
    /// The lot of a grant that names no terms: promotional, priority 50, never expiring.
    fn default() -> Self {
        Self { category: LotCategory::Promotional, priority: DEFAULT_PRIORITY, expires_at: None }
    }
}

impl TryFrom<credit_lot::Model> for CreditLot {
    type Error = LedgerError;

    fn try_from(row: credit_lot::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            category: LotCategory::parse(&row.category)?,
            status: LotStatus::parse(&row.status)?,
            id: row.id,
            organization_id: row.organization_id,
            priority: row.priority,
            original: row.original,
            remaining: row.remaining,
            held: row.held,
            expires_at: row.expires_at,
            source_transaction_id: row.source_transaction_id,
            seq: row.seq,
            created_at: row.created_at,
        })
    }
}
