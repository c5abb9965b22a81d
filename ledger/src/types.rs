//! Domain values of the ledger. Each is parsed once at the edge, so an invalid amount or
//! an over-long string cannot reach the database.

use chrono::{DateTime, SubsecRound, Utc};
use entity::{credit_balance, credit_lot, credit_transaction, organization};

use super::decide::{Allocation, LotCategory, LotSpec, LotStatus};

use super::LedgerError;

/// The largest balance or amount: 2^53 − 1, the largest integer every JSON client holds exactly.
pub const MAX_CREDITS: i64 = 9_007_199_254_740_991;
/// The longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;
/// The longest reference type, reference id, idempotency key or name accepted.
pub const MAX_LABEL_LEN: usize = 255;

/// A strictly positive number of credits, at most [`MAX_CREDITS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(i64);

impl Amount {
    /// Accepts 1 ..= [`MAX_CREDITS`].
    pub fn parse(value: i64) -> Result<Self, LedgerError> {
        if (1..=MAX_CREDITS).contains(&value) {
            Ok(Self(value))
        } else {
            Err(LedgerError::InvalidInput(format!("amount must be between 1 and {MAX_CREDITS}, got {value}")))
        }
    }

    /// The number of credits.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Checks a free-text field's length (in characters) and, when `required`, that it is not blank.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), LedgerError> {
    if value.chars().count() > max {
        return Err(LedgerError::InvalidInput(format!("{field} is longer than {max} characters")));
    }
    Ok(())
}

/// Checks a label (key, reference, name): non-blank and at most [`MAX_LABEL_LEN`] characters.
pub fn check_label(field: &str, value: &str) -> Result<(), LedgerError> {
    if value.trim().is_empty() {
        return Err(LedgerError::InvalidInput(format!("{field} must not be blank")));
    }
    check_text(field, value, MAX_LABEL_LEN)
}

/// Why a balance changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// A paid credit package.
    Purchase,
    /// Usage of a paid feature.
    Consumption,
    /// Credits given by an operator.
    Grant,
    /// Credits taken back after a payment refund.
    Refund,
    /// A correction.
    Adjustment,
    /// The unheld remainder of a lot, gone at its expiry.
    Expiry,
    /// The unheld remainder of a voided lot.
    Void,
}

impl TransactionKind {
    /// The name stored in the database and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "PURCHASE",
            Self::Consumption => "CONSUMPTION",
            Self::Grant => "GRANT",
            Self::Refund => "REFUND",
            Self::Adjustment => "ADJUSTMENT",
            Self::Expiry => "EXPIRY",
            Self::Void => "VOID",
        }
    }

    pub(crate) fn parse(value: &str) -> Result<Self, LedgerError> {
        Ok(match value {
            "PURCHASE" => Self::Purchase,
            "CONSUMPTION" => Self::Consumption,
            "GRANT" => Self::Grant,
            "REFUND" => Self::Refund,
            "ADJUSTMENT" => Self::Adjustment,
            "EXPIRY" => Self::Expiry,
            "VOID" => Self::Void,
            other => {
                return Err(LedgerError::internal(format!("unknown transaction kind {other}")));
            }
        })
    }
}

/// A request to consume credits, already validated.
#[derive(Clone, Debug)]
pub struct ConsumeRequest {
    /// Whose credits.
    pub organization_id: String,
    /// How many.
    pub amount: Amount,
    /// What for.
    pub description: String,
    /// What the usage is about, e.g. `ai_image`.
    pub reference_type: Option<String>,
    /// Which one.
    pub reference_id: Option<String>,
    /// Names this one operation; retries with it are replays.
    pub idempotency_key: Option<String>,
}

impl ConsumeRequest {
    /// Validates the free-text parts of a consume.
    pub fn new(
        organization_id: String,
        amount: Amount,
        description: String,
        reference_type: Option<String>,
        reference_id: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<Self, LedgerError> {
        check_text("description", &description, MAX_DESCRIPTION_LEN)?;
        check_optional_labels(&reference_type, &reference_id, &idempotency_key)?;
        Ok(Self { organization_id, amount, description, reference_type, reference_id, idempotency_key })
    }
}

/// A request to grant credits, already validated.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    /// To whom.
    pub organization_id: String,
    /// How many.
    pub amount: Amount,
    /// Why.
    pub description: String,
    /// Names this one operation; retries with it are replays.
    pub idempotency_key: Option<String>,
    /// The lot it forms.
    pub lot: LotSpec,
}

/// The default priority of a lot.
pub const DEFAULT_PRIORITY: i32 = 50;

impl Default for LotSpec {
    /// The lot of a grant that names no terms: promotional, priority 50, never expiring.
    fn default() -> Self {
        Self { category: LotCategory::Promotional, priority: DEFAULT_PRIORITY, expires_at: None }
    }
}

impl GrantRequest {
    /// Validates the free-text parts of a grant; its lot is promotional, priority 50,
    /// never expiring unless [`GrantRequest::with_lot`] says otherwise.
    pub fn new(
        organization_id: String,
        amount: Amount,
        description: String,
        idempotency_key: Option<String>,
    ) -> Result<Self, LedgerError> {
        check_text("description", &description, MAX_DESCRIPTION_LEN)?;
        check_optional_labels(&None, &None, &idempotency_key)?;
        Ok(Self { organization_id, amount, description, idempotency_key, lot: LotSpec::default() })
    }

    /// The lot this grant forms, validated: priority 0–100, an expiry after `now`.
    /// Omitted parts keep their defaults.
    pub fn with_lot(
        mut self,
        category: Option<LotCategory>,
        priority: Option<i32>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        if let Some(priority) = priority {
            if !(0..=100).contains(&priority) {
                return Err(LedgerError::InvalidInput(format!("priority must be between 0 and 100, got {priority}")));
            }
            self.lot.priority = priority;
        }
        if let Some(expires_at) = expires_at {
            if expires_at <= now {
                return Err(LedgerError::InvalidInput("expiresAt must be in the future".into()));
            }
            self.lot.expires_at = Some(expires_at);
        }
        if let Some(category) = category {
            self.lot.category = category;
        }
        Ok(self)
    }
}

pub(crate) fn check_optional_labels(
    reference_type: &Option<String>,
    reference_id: &Option<String>,
    idempotency_key: &Option<String>,
) -> Result<(), LedgerError> {
    for (field, value) in
        [("referenceType", reference_type), ("referenceId", reference_id), ("idempotencyKey", idempotency_key)]
    {
        if let Some(value) = value {
            check_label(field, value)?;
        }
    }
    Ok(())
}

/// One change of balance, as [`LedgerTx::change`](crate::LedgerTx::change) decides it: every kind of change
/// (consume, grant, purchase, refund) is expressed as this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRequest {
    /// Whose balance.
    pub organization_id: String,
    /// Why.
    pub kind: TransactionKind,
    /// Signed change; the balance must stay within 0 ..= [`MAX_CREDITS`].
    pub delta: i64,
    /// Recorded on the transaction.
    pub description: Option<String>,
    /// Recorded on the transaction.
    pub reference_type: Option<String>,
    /// Recorded on the transaction.
    pub reference_id: Option<String>,
    /// Unique per organization when present.
    pub idempotency_key: Option<String>,
    /// For credits entering the balance: the lot they form (default: promotional,
    /// priority 50, no expiry).
    pub lot: Option<LotSpec>,
}

impl ChangeRequest {
    /// Whether `original`, recorded under the same key, and `original_lot`, the lot it
    /// formed (none for a grant from before lots), were this same request: every input
    /// is compared, so a retry that differs in any of them is a conflict, never a
    /// replay. The lot's expiry is compared at the microsecond both engines store (and
    /// as an instant, whatever offset it was written with).
    pub fn matches(&self, original: &CreditTransaction, original_lot: Option<&CreditLot>) -> bool {
        let same_lot = match (&self.lot, original_lot) {
            (None, _) => true,
            (Some(spec), Some(lot)) => {
                spec.category == lot.category
                    && spec.priority == lot.priority
                    && spec.expires_at.map(|at| at.trunc_subsecs(6)) == lot.expires_at.map(|at| at.trunc_subsecs(6))
            }
            // Before lots a grant took no lot terms: only a retry with the defaults is it.
            (Some(spec), None) => *spec == LotSpec::default(),
        };
        original.kind == self.kind
            && original.amount == self.delta
            && original.description == self.description
            && original.reference_type == self.reference_type
            && original.reference_id == self.reference_id
            && same_lot
    }
}

/// An immutable entry of an organization's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditTransaction {
    /// `ctx_…`
    pub id: String,
    /// Whose balance changed.
    pub organization_id: String,
    /// Position in the organization's history (1, 2, 3 …), in commit order.
    pub seq: i64,
    /// Why.
    pub kind: TransactionKind,
    /// Signed change.
    pub amount: i64,
    /// Balance right after.
    pub balance_after: i64,
    /// Reason given.
    pub description: Option<String>,
    /// Reference type given.
    pub reference_type: Option<String>,
    /// Reference id given.
    pub reference_id: Option<String>,
    /// Idempotency key given.
    pub idempotency_key: Option<String>,
    /// The hold a capture ended.
    pub hold_id: Option<String>,
    /// Commit time (for an expiry, the lot's expiry).
    pub created_at: DateTime<Utc>,
    /// The lots it changed, in draw order, summing to `amount` (no lot: overdraft debt).
    pub allocations: Vec<Allocation>,
}

impl TryFrom<credit_transaction::Model> for CreditTransaction {
    type Error = LedgerError;

    fn try_from(row: credit_transaction::Model) -> Result<Self, LedgerError> {
        Ok(Self {
            kind: TransactionKind::parse(&row.kind)?,
            id: row.id,
            organization_id: row.organization_id,
            seq: row.seq,
            amount: row.amount,
            balance_after: row.balance_after,
            description: row.description,
            reference_type: row.reference_type,
            reference_id: row.reference_id,
            idempotency_key: row.idempotency_key,
            hold_id: row.hold_id,
            created_at: row.created_at,
            allocations: row.allocations.as_deref().map(parse_allocations).transpose()?.unwrap_or_default(),
        })
    }
}

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

/// A lot as stored, for reading (the decision works on [`super::decide::Lot`]).
pub type CreditLot = super::decide::Lot;

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

/// A transaction's allocation as read: which lot, how much.
pub type CreditAllocation = Allocation;

/// The result of a change: the transaction written (or replayed) and the balance now.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The transaction; for a replay, the original one.
    pub transaction: CreditTransaction,
    /// The lot it formed (grants); none for a replay of a grant from before lots.
    pub lot: Option<String>,
    /// The balance after the change; for a replay, the current balance.
    pub balance: Balance,
    /// Whether this answers a retry of an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// `org_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Default threshold for low-balance warnings.
    pub low_balance_threshold: Option<i64>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<organization::Model> for Organization {
    fn from(row: organization::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            low_balance_threshold: row.low_balance_threshold,
            created_at: row.created_at,
        }
    }
}

/// A fresh opaque id with a type prefix: time-ordered, unique across types.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// One allocation as stored in its transaction's row (`credit_transactions.allocations`).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAllocation<'a> {
    lot: Option<std::borrow::Cow<'a, str>>,
    amount: i64,
}

/// A transaction's or hold's allocations as stored: `[{"lot":"lot_…","amount":-2},…]`.
pub(super) fn allocations_json(allocations: &[Allocation]) -> String {
    let stored: Vec<StoredAllocation<'_>> = allocations
        .iter()
        .map(|allocation| StoredAllocation {
            lot: allocation.lot_id.as_deref().map(Into::into),
            amount: allocation.amount,
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| unreachable!("strings and integers always serialize"))
}

/// A transaction's or hold's stored allocations, read back.
pub(super) fn parse_allocations(json: &str) -> Result<Vec<Allocation>, LedgerError> {
    let stored: Vec<StoredAllocation<'_>> = serde_json::from_str(json)
        .map_err(|error| LedgerError::internal(format!("a transaction's allocations are unreadable: {error}")))?;
    Ok(stored
        .into_iter()
        .map(|allocation| Allocation {
            lot_id: allocation.lot.map(std::borrow::Cow::into_owned),
            amount: allocation.amount,
        })
        .collect())
}
