//! The decision step: given an organization's state, locked, what one change does to it.
//!
//! Pure functions over plain values, so that a batch of requests is decided in memory,
//! one after another, against the state the previous one left, and the results written
//! once (see `ledger/tx.rs` and `ledger/committer.rs`). Every rule about what a balance
//! may become lives here and only here; the database's `CHECK` is the second line.

use super::{LedgerError, MAX_CREDITS};

/// What the decision needs to know of an organization, as locked for this transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Credits held.
    pub balance: i64,
    /// Changes so far: the sequence number of the latest transaction.
    pub version: i64,
}

/// One decided entry of the organization's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number (the version after it).
    pub seq: i64,
    /// The signed change.
    pub amount: i64,
    /// The balance right after it.
    pub balance_after: i64,
}

/// Decides a change of `delta` credits: the entry it makes, with `state` advanced past
/// it, or why it cannot happen (`state` untouched). The balance stays within
/// 0 ..= [`MAX_CREDITS`].
pub fn change(state: &mut State, delta: i64) -> Result<Entry, LedgerError> {
    if delta == 0 || delta.unsigned_abs() > MAX_CREDITS as u64 {
        return Err(LedgerError::InvalidInput(format!("change of {delta} credits is out of range")));
    }
    // Both within ±MAX_CREDITS, so the sum cannot overflow.
    let after = state.balance + delta;
    if after < 0 {
        return Err(LedgerError::InsufficientCredits { balance: state.balance, required: -delta });
    }
    if after > MAX_CREDITS {
        return Err(LedgerError::BalanceLimitExceeded { max: MAX_CREDITS });
    }
    state.balance = after;
    state.version += 1;
    Ok(Entry { seq: state.version, amount: delta, balance_after: after })
}

/// How much of `wanted` credits a clawback takes: never more than the balance (credits
/// already spent are not recovered). Returns (taken, shortfall).
pub fn clawback(state: &State, wanted: i64) -> (i64, i64) {
    let taken = wanted.clamp(0, state.balance.max(0));
    (taken, wanted.max(0) - taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_advance_the_state_and_refusals_leave_it() {
        let mut state = State { balance: 10, version: 3 };
        assert_eq!(change(&mut state, -4).ok(), Some(Entry { seq: 4, amount: -4, balance_after: 6 }));
        assert!(matches!(change(&mut state, -7), Err(LedgerError::InsufficientCredits { balance: 6, required: 7 })));
        assert_eq!(state, State { balance: 6, version: 4 });
        assert!(matches!(change(&mut state, MAX_CREDITS), Err(LedgerError::BalanceLimitExceeded { .. })));
        assert!(matches!(change(&mut state, 0), Err(LedgerError::InvalidInput(_))));
        assert_eq!(change(&mut state, 4).map(|entry| entry.balance_after).ok(), Some(10));
    }

    #[test]
    fn a_clawback_takes_at_most_the_balance() {
        let state = State { balance: 30, version: 1 };
        assert_eq!(clawback(&state, 20), (20, 0));
        assert_eq!(clawback(&state, 50), (30, 20));
        assert_eq!(clawback(&state, -5), (0, 0));
    }
}
