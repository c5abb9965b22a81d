//! Following one organization: hints say *that* something changed; the follower reads
//! *what* changed from the database, one page at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::backoff;
use super::wire::Hint;
use crate::Ledger;

/// Transactions read (and held) at once per follower: its memory bound, however long
/// the backlog.
const PAGE: u64 = 256;

/// One step of an organization's history, as a follower delivers it (read from the
/// database, never taken from a hint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// A committed transaction, in sequence order.
    Changed {
        /// Its sequence number.
        seq: i64,
        /// Balance after it.
        balance: i64,
        /// `ctx_…`
        transaction_id: String,
        /// Commit time.
        at: DateTime<Utc>,
    },
    /// Credits were held or released without a transaction: `held` and `available` may
    /// differ from those last delivered (the subscriber reads them).
    Held {
        /// When the follower learnt it.
        at: DateTime<Utc>,
    },
    /// The threshold differs from the one last delivered (only for followers that
    /// follow it, see [`Follower::with_threshold`]).
    Threshold {
        /// The threshold now.
        threshold: Option<i64>,
        /// When the follower saw it.
        at: DateTime<Utc>,
    },
}

/// Follows one organization's history from a known sequence number: each committed
/// transaction exactly once, in order.
///
/// Every hint only marks what to re-read; hints waiting together are drained and
/// answered by one read. A hint with a sequence number already delivered is dropped,
/// and one naming a future or unknown change simply finds nothing new, so a forged hint
/// neither delivers anything nor holds back the next genuine change.
pub struct Follower {
    ledger: Ledger,
    organization_id: String,
    receiver: broadcast::Receiver<Arc<Hint>>,
    last_seq: i64,
    /// The threshold last delivered, when this follower follows it.
    threshold: Option<Option<i64>>,
    /// At most one page of steps read but not yet delivered.
    pending: VecDeque<Followed>,
    /// Transactions after `last_seq` may exist.
    transactions_due: bool,
    /// The threshold may have changed.
    threshold_due: bool,
    /// Held credits may have changed without a transaction.
    held_due: bool,
    /// Consecutive failed reads (for the backoff before the next one).
    failures: u32,
    /// The hub is gone: deliver what is due, then end.
    closed: bool,
}

impl Follower {
    /// Starts following. Subscribe first, then read the starting point, so nothing
    /// committed in between is missed: call with a receiver taken before `last_seq` was read.
    pub fn new(
        ledger: Ledger,
        organization_id: String,
        receiver: broadcast::Receiver<Arc<Hint>>,
        last_seq: i64,
    ) -> Self {
        Self {
            ledger,
            organization_id,
            receiver,
            last_seq,
            threshold: None,
            pending: VecDeque::new(),
            transactions_due: false,
            threshold_due: false,
            held_due: false,
            failures: 0,
            closed: false,
        }
    }

    /// Also follows the organization's low-balance threshold, starting from `current`
    /// (read after the receiver was taken): changes come as [`Followed::Threshold`], and
    /// every resync (a lost `LISTEN` connection, a lag) re-reads it.
    pub fn with_threshold(mut self, current: Option<i64>) -> Self {
        self.threshold = Some(current);
        self
    }

    /// The next step; `None` when the hub is gone.
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(step) = self.pending.pop_front() {
                return Some(step);
            }
            self.drain_hints();
            if !self.transactions_due && !self.threshold_due && self.held_due {
                // Several hold hints waiting together make one step.
                self.held_due = false;
                return Some(Followed::Held { at: self.ledger.now() });
            }
            if !self.transactions_due && !self.threshold_due {
                if self.closed {
                    return None;
                }
                let received = self.receiver.recv().await;
                self.note(received);
                continue;
            }
            if self.failures > 0 {
                tokio::time::sleep(backoff(self.failures)).await;
            }
            // Boxed: a read's future is large and alive only while it runs, and an idle
            // follower (most of them, most of the time) then holds only the wait above.
            Box::pin(self.read()).await;
        }
    }

    /// Takes every hint already waiting, without waiting for more (coalescing).
    fn drain_hints(&mut self) {
        loop {
            match self.receiver.try_recv() {
                Ok(hint) => self.note(Ok(hint)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(skipped)) => self.note(Err(RecvError::Lagged(skipped))),
                Err(TryRecvError::Closed) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Marks what a hint (or a lag) makes due.
    fn note(&mut self, received: Result<Arc<Hint>, RecvError>) {
        let follows_threshold = self.threshold.is_some();
        match received {
            Ok(hint) => match *hint {
                Hint::Changed { seq, .. } => self.transactions_due |= seq > self.last_seq,
                Hint::Threshold { .. } => self.threshold_due |= follows_threshold,
                Hint::Held { .. } => self.held_due = true,
                Hint::Resync { .. } => {
                    self.transactions_due = true;
                    self.held_due = true;
                    self.threshold_due |= follows_threshold;
                }
            },
            Err(RecvError::Lagged(skipped)) => {
                tracing::debug!(skipped, organization = %self.organization_id, "follower lagged; re-reading");
                self.transactions_due = true;
                self.held_due = true;
                self.threshold_due |= follows_threshold;
            }
            Err(RecvError::Closed) => self.closed = true,
        }
    }

    /// One read: the next page of transactions while any may be due, then the threshold
    /// (so a threshold is applied after the transactions committed before it).
    async fn read(&mut self) {
        if self.transactions_due {
            match self.ledger.transactions_since(&self.organization_id, self.last_seq, PAGE).await {
                Ok(page) => {
                    self.failures = 0;
                    // A full page: more may follow, read once this one is delivered.
                    self.transactions_due = page.len() as u64 == PAGE;
                    for transaction in page {
                        self.last_seq = transaction.seq;
                        self.pending.push_back(Followed::Changed {
                            seq: transaction.seq,
                            balance: transaction.balance_after,
                            transaction_id: transaction.id,
                            at: transaction.created_at,
                        });
                    }
                }
                Err(error) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(%error, organization = %self.organization_id, "live events: catch-up read failed; retrying");
                }
            }
            return;
        }
        if self.threshold_due {
            match self.ledger.organization(&self.organization_id).await {
                Ok(organization) => {
                    self.failures = 0;
                    self.threshold_due = false;
                    let threshold = organization.and_then(|organization| organization.low_balance_threshold);
                    if self.threshold.is_some_and(|known| known != threshold) {
                        self.threshold = Some(threshold);
                        self.pending.push_back(Followed::Threshold { threshold, at: self.ledger.now() });
                    }
                }
                Err(error) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(%error, organization = %self.organization_id, "live events: threshold read failed; retrying");
                }
            }
        }
    }
}
