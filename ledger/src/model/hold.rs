//! Holds: credits reserved now, captured or released later; their requests and results.

use chrono::{DateTime, Duration, Utc};
use entity::credit_hold;

use super::{Actor, Allocation, Amount, Balance, CreditTransaction, MAX_DESCRIPTION_LEN, check_text};
use crate::LedgerError;

/// How a hold ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    /// Reserving credits.
    Active,
    /// Ended by a capture.
    Captured,
    /// Ended by a release.
    Released,
    /// Ended by its TTL.
    Expired,
}

impl HoldStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Captured => "CAPTURED",
            Self::Released => "RELEASED",
            Self::Expired => "EXPIRED",
        }
    }

    /// The status named `value`.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        match value {
            "ACTIVE" => Ok(Self::Active),
            "CAPTURED" => Ok(Self::Captured),
            "RELEASED" => Ok(Self::Released),
            "EXPIRED" => Ok(Self::Expired),
            other => Err(LedgerError::internal(format!("unknown hold status {other}"))),
        }
    }
}

/// A hold's TTL when the caller gives none.
pub const DEFAULT_HOLD_TTL_SECS: i64 = 900;

/// The longest TTL a hold may have.
pub const MAX_HOLD_TTL_SECS: i64 = 86_400;

/// A hold as read, as of a given instant: past its `expires_at`, an active hold reads as
/// `EXPIRED` even before a sweep writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditHold {
    /// `hld_…`
    pub id: String,
    /// Whose credits.
    pub organization_id: String,
    /// Credits reserved.
    pub amount: i64,
    /// Credits captured, once captured.
    pub captured: Option<i64>,
    /// Where it is in its life.
    pub status: HoldStatus,
    /// What for.
    pub description: String,
    /// What the work is about.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// The key it was created under.
    pub idempotency_key: Option<String>,
    /// The capture's `CONSUMPTION` transaction.
    pub transaction_id: Option<String>,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// Where the credits are reserved (positive; a null lot is overdraft).
    pub allocations: Vec<Allocation>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Latest change (its resolution).
    pub updated_at: DateTime<Utc>,
}

impl CreditHold {
    /// The hold stored in `row`, reserving `allocations`, as of `at`.
    pub(crate) fn from_row(
        row: credit_hold::Model,
        allocations: Vec<Allocation>,
        at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        let mut hold = Self {
            status: HoldStatus::parse(&row.status)?,
            id: row.id,
            organization_id: row.organization_id,
            amount: row.amount,
            captured: row.captured,
            description: row.description,
            reference_type: row.reference_type,
            reference_id: row.reference_id,
            idempotency_key: row.idempotency_key,
            transaction_id: row.transaction_id,
            expires_at: row.expires_at,
            allocations,
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        if hold.status == HoldStatus::Active && hold.expires_at <= at {
            hold.status = HoldStatus::Expired;
            hold.updated_at = hold.expires_at;
        }
        Ok(hold)
    }
}

/// A request to reserve credits, already validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRequest {
    /// Whose credits.
    pub organization_id: String,
    /// How many.
    pub amount: i64,
    /// What for.
    pub description: String,
    /// What the work is about.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// Names this one operation; shares the namespace of consumes' keys.
    pub idempotency_key: Option<String>,
    /// How long the hold lives unless captured or released.
    pub ttl_seconds: i64,
}

impl HoldRequest {
    /// Validates a hold: free text as for consumes, `ttl_seconds` 1 to 86400 (default 900).
    pub fn new(
        organization_id: String,
        amount: Amount,
        description: String,
        reference_type: Option<String>,
        reference_id: Option<String>,
        idempotency_key: Option<String>,
        ttl_seconds: Option<i64>,
    ) -> Result<Self, LedgerError> {
        check_text("description", &description, MAX_DESCRIPTION_LEN)?;
        super::check_optional_labels(&reference_type, &reference_id, &idempotency_key)?;
        let ttl_seconds = ttl_seconds.unwrap_or(DEFAULT_HOLD_TTL_SECS);
        if !(1..=MAX_HOLD_TTL_SECS).contains(&ttl_seconds) {
            return Err(LedgerError::InvalidInput(format!(
                "ttlSeconds must be between 1 and {MAX_HOLD_TTL_SECS}, got {ttl_seconds}"
            )));
        }
        Ok(Self {
            organization_id,
            amount: amount.get(),
            description,
            reference_type,
            reference_id,
            idempotency_key,
            ttl_seconds,
        })
    }

    /// Whether `original`, created under the same key, was this same request.
    pub(crate) fn matches(&self, original: &CreditHold) -> bool {
        original.amount == self.amount
            && original.description == self.description
            && original.reference_type == self.reference_type
            && original.reference_id == self.reference_id
            && (original.expires_at - original.created_at) == Duration::seconds(self.ttl_seconds)
    }

    /// The stored row of the hold this request creates at `at`.
    pub(crate) fn row(&self, id: String, at: DateTime<Utc>, allocations: String) -> credit_hold::Model {
        credit_hold::Model {
            id,
            organization_id: self.organization_id.clone(),
            amount: self.amount,
            captured: None,
            status: HoldStatus::Active.as_str().to_owned(),
            description: self.description.clone(),
            reference_type: self.reference_type.clone(),
            reference_id: self.reference_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            transaction_id: None,
            allocations,
            expires_at: at + Duration::seconds(self.ttl_seconds),
            created_at: at,
            updated_at: at,
        }
    }
}

/// A request to capture a hold (its organization found by [`Ledger::hold`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRequest {
    /// The hold's organization.
    pub organization_id: String,
    /// `hld_…`
    pub hold_id: String,
    /// Credits to capture; the whole hold when absent.
    pub amount: Option<i64>,
    /// The transaction's description; the hold's when absent.
    pub description: Option<String>,
    /// Who asks (recorded on the capture's transaction).
    pub by: Actor,
}

impl CaptureRequest {
    /// Validates a capture.
    pub fn new(
        organization_id: String,
        hold_id: String,
        amount: Option<Amount>,
        description: Option<String>,
    ) -> Result<Self, LedgerError> {
        if let Some(description) = &description {
            check_text("description", description, MAX_DESCRIPTION_LEN)?;
        }
        Ok(Self { organization_id, hold_id, amount: amount.map(Amount::get), description, by: Actor::default() })
    }

    /// The same request, recorded as made by `by`.
    pub fn by(self, by: Actor) -> Self {
        Self { by, ..self }
    }

    /// Whether capturing `hold` again with this request is a replay of its capture.
    pub(crate) fn replays(&self, hold: &CreditHold) -> bool {
        hold.status == HoldStatus::Captured && hold.captured == Some(self.amount.unwrap_or(hold.amount))
    }
}

/// The result of `createHold`.
#[derive(Clone, Debug)]
pub struct HoldCreated {
    /// The hold (for a replay, the original, as of now).
    pub hold: CreditHold,
    /// The balance after (for a replay, now).
    pub balance: Balance,
    /// Whether this answers a retry under the same idempotency key.
    pub replayed: bool,
}

/// The result of `captureHold`.
#[derive(Clone, Debug)]
pub struct HoldCaptured {
    /// The hold, captured.
    pub hold: CreditHold,
    /// Its `CONSUMPTION` transaction.
    pub transaction: CreditTransaction,
    /// The balance after (for a replay, now).
    pub balance: Balance,
    /// Whether this answers a repeated capture.
    pub replayed: bool,
}
