//! Live events: every committed change reaches the subscribers of its organization, in
//! commit order, on every replica; a revoked API key loses its WebSockets at once.
//!
//! # Design: hints, verified against the database
//! A live event is a *hint*, never trusted data ([`wire`]): it names a committed change
//! (organization and sequence number; for a threshold, just the organization; for a
//! revocation, the key id) and nothing else.
//!
//! - On PostgreSQL the committing code sends the hint with `NOTIFY` inside its own
//!   transaction, so it exists only if the change committed, and every replica's
//!   `LISTEN` task ([`postgres`]) feeds it to that process's [`EventHub`] ([`hub`]).
//!   On SQLite (one process) the ledger publishes to the hub after commit, and a poll
//!   ([`sqlite`]) finds revocations committed by other processes (the CLI).
//! - A [`Follower`] ([`follower`]) turns hints into data: it drains whatever hints are
//!   waiting, reads the transactions after the last one it delivered (one page at a
//!   time, so its memory is bounded however large the backlog) and, for `lowBalance`,
//!   the current threshold. A hint that came from nowhere (a `pg_notify` sent by hand)
//!   therefore delivers nothing and holds nothing up; a lost or lagged hint is made good
//!   by the next read; nothing is delivered twice or out of order.
//! - A WebSocket connection watches revocation hints for its key ([`KeyWatch`]) and
//!   re-checks the key in the database before closing with 4403.
//! - After a lost `LISTEN` connection (hints may be missing) every follower re-reads and
//!   every connection re-checks its key. Reconnects and failed reads back off
//!   exponentially with jitter ([`backoff`]).

mod follower;
mod hub;
mod postgres;
mod sqlite;
mod wire;

use std::time::Duration;

pub use follower::{Followed, Follower};
pub use hub::{EventHub, KeyHint, KeyWatch};
pub use postgres::listen_postgres;
pub use sqlite::poll_sqlite_revocations;
pub(crate) use wire::notifications;
pub use wire::{BALANCE_CHANNEL, BalanceEvent, Hint, KEY_CHANNEL};

/// The first wait before a retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest wait before a retry.
const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// How long to wait before retry number `attempt` (from 1): doubling from
/// [`BACKOFF_BASE`] up to [`BACKOFF_CAP`], of which a random half, so that replicas and
/// followers that failed together do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    let mut random = [0u8; 4];
    // Without randomness, the full wait is still a correct (if less spread) choice.
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    ceiling / 2 + ceiling.mul_f64(fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_with_jitter() {
        for attempt in 1..40 {
            let ceiling = BACKOFF_BASE.saturating_mul(1 << (attempt - 1).min(16)).min(BACKOFF_CAP);
            let wait = backoff(attempt);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "attempt {attempt}: {wait:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(100) <= BACKOFF_CAP);
    }
}
