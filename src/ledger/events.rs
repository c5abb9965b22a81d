//! Live balance events: every committed change reaches the subscribers of its
//! organization, in commit order, on every replica.
//!
//! On PostgreSQL, [`super::apply_change`] sends a `NOTIFY` inside the changing
//! transaction, so an event exists only if the change committed, and notifications
//! arrive in commit order at every replica's `LISTEN` task, which feeds the in-process
//! [`EventHub`]. On SQLite (one process) the ledger publishes to the hub after commit.
//!
//! Events are hints, the database is the truth: each change carries its sequence number,
//! and a [`Follower`] that sees a gap (a lagged receiver, a lost notification, out-of-order
//! local publishing) reads the missing transactions from the database. So a slow
//! subscriber never blocks a publisher (channels are bounded and drop the oldest), and
//! nothing is delivered twice or out of order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{CreditTransaction, Ledger, LedgerError};

/// The PostgreSQL channel balance events travel on.
pub const CHANNEL: &str = "credits_balance_events";
/// Events buffered per organization for slow subscribers before they must catch up
/// from the database.
const CHANNEL_CAPACITY: usize = 256;

/// Something that happened to one organization's balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum BalanceEvent {
    /// A committed transaction.
    #[serde(rename = "c")]
    Changed {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
        /// Its sequence number (the balance version after it).
        #[serde(rename = "s")]
        seq: i64,
        /// The balance after it.
        #[serde(rename = "b")]
        balance: i64,
        /// `ctx_…`
        #[serde(rename = "t")]
        transaction_id: String,
        /// Commit time.
        #[serde(rename = "a")]
        at: DateTime<Utc>,
    },
    /// The organization's low-balance threshold was set or cleared.
    #[serde(rename = "h")]
    Threshold {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
        /// The new threshold.
        #[serde(rename = "h")]
        threshold: Option<i64>,
        /// When.
        #[serde(rename = "a")]
        at: DateTime<Utc>,
    },
    /// Transactions may have been committed without their events being seen (a
    /// lost notification connection): followers re-read from the database.
    #[serde(rename = "r")]
    Resync {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
    },
}

impl BalanceEvent {
    /// The event of a committed transaction.
    pub fn changed(transaction: &CreditTransaction) -> Self {
        Self::Changed {
            organization_id: transaction.organization_id.clone(),
            seq: transaction.seq,
            balance: transaction.balance_after,
            transaction_id: transaction.id.clone(),
            at: transaction.created_at,
        }
    }

    fn organization_id(&self) -> &str {
        match self {
            Self::Changed { organization_id, .. }
            | Self::Threshold { organization_id, .. }
            | Self::Resync { organization_id } => organization_id,
        }
    }
}

/// Fans events out to the subscribers of each organization in this process.
#[derive(Clone, Debug, Default)]
pub struct EventHub {
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<BalanceEvent>>>>>,
    /// Whether the PostgreSQL `LISTEN` connection is up (readiness).
    listening: Arc<AtomicBool>,
}

impl EventHub {
    /// A receiver of the organization's future events.
    pub fn subscribe(&self, organization_id: &str) -> broadcast::Receiver<Arc<BalanceEvent>> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget organizations nobody listens to any more.
        if channels.len() > 1024 {
            channels.retain(|_, sender| sender.receiver_count() > 0);
        }
        channels.entry(organization_id.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }

    /// Delivers an event to the organization's current subscribers; never waits.
    pub fn publish(&self, event: BalanceEvent) {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let organization_id = event.organization_id().to_owned();
        if let Some(sender) = channels.get(&organization_id)
            && sender.send(Arc::new(event)).is_err()
        {
            channels.remove(&organization_id);
        }
    }

    /// Tells every subscriber to re-read from the database.
    pub fn resync_all(&self) {
        let organizations: Vec<String> = {
            let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            channels.keys().cloned().collect()
        };
        for organization_id in organizations {
            self.publish(BalanceEvent::Resync { organization_id });
        }
    }

    /// Whether this process receives the database's notifications right now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// How many subscribers are connected (for metrics and tests).
    pub fn subscriber_count(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.values().map(broadcast::Sender::receiver_count).sum()
    }
}

/// Sends `event` on `conn` as a PostgreSQL notification; inside a transaction it is
/// delivered only if and when that transaction commits. Does nothing on SQLite.
pub async fn notify<C: ConnectionTrait>(conn: &C, event: &BalanceEvent) -> Result<(), LedgerError> {
    if conn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let payload = serde_json::to_string(event).map_err(|error| LedgerError::internal(error.to_string()))?;
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

/// Feeds `hub` from PostgreSQL notifications until the process ends, reconnecting
/// (and asking every follower to resync) whenever the listening connection is lost.
pub async fn listen_postgres(db: DatabaseConnection, hub: EventHub) {
    let pool = db.get_postgres_connection_pool().clone();
    loop {
        let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "balance events: cannot connect to LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(%error, "balance events: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        hub.listening.store(true, Ordering::Relaxed);
        // Anything committed while we were not listening is found by re-reading.
        hub.resync_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match serde_json::from_str::<BalanceEvent>(notification.payload()) {
                    Ok(event) => hub.publish(event),
                    Err(error) => tracing::warn!(%error, "balance events: unreadable notification"),
                },
                Ok(None) => {
                    hub.listening.store(false, Ordering::Relaxed);
                    tracing::warn!("balance events: LISTEN connection lost; reconnecting");
                    break;
                }
                Err(error) => {
                    hub.listening.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, "balance events: LISTEN failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// One step of an organization's history, as a follower delivers it.
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
    /// The threshold was set or cleared.
    Threshold {
        /// The new threshold.
        threshold: Option<i64>,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Follows one organization's history from a known sequence number: each committed
/// transaction exactly once, in order, filling any gap from the database.
pub struct Follower {
    ledger: Ledger,
    organization_id: String,
    receiver: broadcast::Receiver<Arc<BalanceEvent>>,
    last_seq: i64,
    pending: VecDeque<Followed>,
    /// Set when a catch-up read failed: retried (with backoff) before anything else.
    behind: bool,
}

impl Follower {
    /// Starts following. Subscribe first, then read the starting point, so nothing
    /// committed in between is missed: call with a receiver taken before `last_seq` was read.
    pub fn new(
        ledger: Ledger,
        organization_id: String,
        receiver: broadcast::Receiver<Arc<BalanceEvent>>,
        last_seq: i64,
    ) -> Self {
        Self { ledger, organization_id, receiver, last_seq, pending: VecDeque::new(), behind: false }
    }

    /// The next step; `None` when the hub is gone.
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(step) = self.pending.pop_front() {
                return Some(step);
            }
            if self.behind {
                if !self.catch_up().await {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            let catch_up = match self.receiver.recv().await {
                Ok(event) => match event.as_ref() {
                    BalanceEvent::Changed { seq, .. } if *seq <= self.last_seq => false,
                    BalanceEvent::Changed { seq, balance, transaction_id, at, .. } if *seq == self.last_seq + 1 => {
                        self.last_seq = *seq;
                        return Some(Followed::Changed {
                            seq: *seq,
                            balance: *balance,
                            transaction_id: transaction_id.clone(),
                            at: *at,
                        });
                    }
                    BalanceEvent::Threshold { threshold, at, .. } => {
                        return Some(Followed::Threshold { threshold: *threshold, at: *at });
                    }
                    BalanceEvent::Changed { .. } | BalanceEvent::Resync { .. } => true,
                },
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, organization = %self.organization_id, "subscriber lagged; catching up");
                    true
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if catch_up {
                self.catch_up().await;
            }
        }
    }

    /// Reads every transaction after the last one delivered, page by page; on failure,
    /// marks the follower behind so the read is retried.
    async fn catch_up(&mut self) -> bool {
        const PAGE: u64 = 500;
        loop {
            match self.ledger.transactions_since(&self.organization_id, self.last_seq, PAGE).await {
                Ok(transactions) => {
                    let full = transactions.len() as u64 == PAGE;
                    for transaction in transactions {
                        self.last_seq = transaction.seq;
                        self.pending.push_back(Followed::Changed {
                            seq: transaction.seq,
                            balance: transaction.balance_after,
                            transaction_id: transaction.id,
                            at: transaction.created_at,
                        });
                    }
                    if !full {
                        self.behind = false;
                        return true;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, organization = %self.organization_id, "catch-up read failed; retrying");
                    self.behind = true;
                    return false;
                }
            }
        }
    }
}
