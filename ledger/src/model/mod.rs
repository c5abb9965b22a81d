//! The ledger's nouns, one file each: amounts, transactions (their kinds, requests and
//! allocations), balances, lots, holds, organizations and usage totals. Each is parsed once at the
//! edge, so an invalid amount or an over-long string cannot reach a decision or the
//! database.

mod amount;
mod audit;
mod balance;
mod event;
mod hold;
mod lot;
mod organization;
mod transaction;
mod usage;

pub use amount::{Amount, MAX_CREDITS};
pub use audit::{Audit, AuditAction, AuditActor, AuditActorType, AuditEvent, AuditFilter};
pub use balance::Balance;
pub use event::EventType;
pub use hold::{
    CaptureRequest, CreditHold, DEFAULT_HOLD_TTL_SECS, HoldCaptured, HoldCreated, HoldRequest, HoldStatus,
    MAX_HOLD_TTL_SECS,
};
pub use lot::{CreditLot, DEFAULT_PRIORITY, LotCategory, LotSpec, LotStatus};
pub use organization::Organization;
pub use transaction::{
    Actor, Allocation, Applied, ChangeRequest, ConsumeRequest, CreditTransaction, GrantRequest, TransactionKind,
};
pub(crate) use transaction::{allocations_json, parse_allocations};
pub use usage::UsageTotals;
pub(crate) use usage::{SLOT_SECS, slot_of};

use crate::LedgerError;

/// The longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;

/// The longest reference type, reference id, idempotency key or name accepted.
pub const MAX_LABEL_LEN: usize = 255;

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

/// A fresh opaque id with a type prefix: time-ordered, unique across types.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
