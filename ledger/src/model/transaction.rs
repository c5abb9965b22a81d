//! Transactions: the immutable history of a balance, their kinds, the requests that
//! write them and the allocations that say which lots they drew.

use chrono::{DateTime, SubsecRound, Utc};
use entity::credit_transaction;

use super::{Amount, Balance, CreditLot, LotCategory, LotSpec, MAX_DESCRIPTION_LEN, check_optional_labels, check_text};
use crate::LedgerError;

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

    /// The kind named `name` (as [`TransactionKind::as_str`] writes it), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "PURCHASE" => Self::Purchase,
            "CONSUMPTION" => Self::Consumption,
            "GRANT" => Self::Grant,
            "REFUND" => Self::Refund,
            "ADJUSTMENT" => Self::Adjustment,
            "EXPIRY" => Self::Expiry,
            "VOID" => Self::Void,
            _ => return None,
        })
    }

    /// A stored kind; an unknown one is a fault of the database, not of a client.
    pub(crate) fn parse(value: &str) -> Result<Self, LedgerError> {
        Self::from_name(value).ok_or_else(|| LedgerError::internal(format!("unknown transaction kind {value}")))
    }
}

/// Who made a change: the API key (used directly, or the key that minted the client
/// session) and the client session. Both none for the admin token, Stripe and the
/// ledger's own entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// `key_…`
    pub api_key_id: Option<String>,
    /// `cs_…`
    pub client_session_id: Option<String>,
    /// For an audited change (a grant): who acts and from where, for its audit row
    /// (none: the ledger handle's own, see [`crate::Ledger::with_audit`]).
    pub audit: Option<std::sync::Arc<crate::Audit>>,
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
    /// Who asks.
    pub by: Actor,
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
        let by = Actor::default();
        Ok(Self { organization_id, amount, description, reference_type, reference_id, idempotency_key, by })
    }

    /// The same request, recorded as made by `by`.
    pub fn by(self, by: Actor) -> Self {
        Self { by, ..self }
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
    /// Who asks.
    pub by: Actor,
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
        let lot = LotSpec::default();
        Ok(Self { organization_id, amount, description, idempotency_key, lot, by: Actor::default() })
    }

    /// The same request, recorded as made by `by`.
    pub fn by(self, by: Actor) -> Self {
        Self { by, ..self }
    }

    /// The lot this grant forms, validated: priority 0–100, an expiry after `now` (kept
    /// to the microsecond, as PostgreSQL keeps it: written as text, a finer one would be
    /// rounded there, not cut, and its retry no longer match). Omitted parts keep their
    /// defaults.
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
            self.lot.expires_at = Some(expires_at.trunc_subsecs(6));
        }
        if let Some(category) = category {
            self.lot.category = category;
        }
        Ok(self)
    }
}

/// One change of balance, as [`LedgerTx::change`](crate::LedgerTx::change) decides it: every kind of change
/// (consume, grant, purchase, refund) is expressed as this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRequest {
    /// Whose balance.
    pub organization_id: String,
    /// Why.
    pub kind: TransactionKind,
    /// Signed change; the balance stays at most [`MAX_CREDITS`], and no lower than the
    /// overdraft limit allows.
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
    /// Who asks (recorded on the transaction; not compared on replay).
    pub by: Actor,
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
    /// The API key that made it (directly or through a client session).
    pub api_key_id: Option<String>,
    /// The client session that made it.
    pub client_session_id: Option<String>,
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
            api_key_id: row.api_key_id,
            client_session_id: row.client_session_id,
            created_at: row.created_at,
            allocations: row.allocations.as_deref().map(parse_allocations).transpose()?.unwrap_or_default(),
        })
    }
}

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

/// One line of a transaction or a hold: how much of it went to (or came from) one lot,
/// or, with no lot, to the overdraft debt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The lot, or none for overdraft debt.
    pub lot_id: Option<String>,
    /// With the transaction's sign.
    pub amount: i64,
}

/// One allocation as stored in its transaction's row (`credit_transactions.allocations`).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAllocation<'a> {
    lot: Option<std::borrow::Cow<'a, str>>,
    amount: i64,
}

/// A transaction's or hold's allocations as stored: `[{"lot":"lot_…","amount":-2},…]`.
pub(crate) fn allocations_json(allocations: &[Allocation]) -> String {
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
pub(crate) fn parse_allocations(json: &str) -> Result<Vec<Allocation>, LedgerError> {
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
