//! The in-process hub: fans hints out to this process's followers (per organization)
//! and WebSocket connections (API-key revocations). It never waits: channels are bounded
//! and a receiver that falls behind is told it lagged, which it treats as "re-read".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::wire::Hint;

/// Hints buffered per organization before a slow follower is told it lagged.
const CHANNEL_CAPACITY: usize = 256;
/// Revocation hints buffered per connection before it is told it lagged.
const KEY_CHANNEL_CAPACITY: usize = 64;

/// A hint about API keys, for open WebSocket connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyHint {
    /// This key may have been revoked.
    Revoked(Arc<str>),
    /// Hints may have been missed (the `LISTEN` connection was lost): any key may have been.
    RecheckAll,
}

/// Fans hints out to the subscribers of this process.
#[derive(Clone, Debug)]
pub struct EventHub {
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Hint>>>>>,
    keys: broadcast::Sender<KeyHint>,
    /// Whether the PostgreSQL `LISTEN` connection is up (readiness).
    listening: Arc<AtomicBool>,
    /// Wakes this process's webhook dispatcher when a commit wrote deliveries.
    deliveries: Arc<tokio::sync::Notify>,
    /// Wakes this process's top-up worker when a commit started a top-up.
    top_ups: Arc<tokio::sync::Notify>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            channels: Arc::default(),
            keys: broadcast::channel(KEY_CHANNEL_CAPACITY).0,
            listening: Arc::default(),
            deliveries: Arc::default(),
            top_ups: Arc::default(),
        }
    }
}

impl EventHub {
    /// Notified when a commit of this process started a top-up.
    pub fn top_ups(&self) -> &tokio::sync::Notify {
        &self.top_ups
    }

    /// Notified when a commit of this process wrote webhook deliveries (other replicas'
    /// dispatchers find them with their periodic sweep).
    pub fn deliveries(&self) -> &tokio::sync::Notify {
        &self.deliveries
    }

    /// A receiver of the hints about the organization from now on.
    pub fn subscribe(&self, organization_id: &str) -> broadcast::Receiver<Arc<Hint>> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget organizations nobody listens to any more.
        if channels.len() > 1024 {
            channels.retain(|_, sender| sender.receiver_count() > 0);
        }
        channels.entry(organization_id.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }

    /// Delivers a hint to the organization's current subscribers; never waits. Hints
    /// about organizations nobody here follows cost nothing (no channel is created).
    pub fn publish(&self, hint: Hint) {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let hint = Arc::new(hint);
        if let Some(sender) = channels.get(hint.organization_id())
            && sender.send(Arc::clone(&hint)).is_err()
        {
            channels.remove(hint.organization_id());
        }
    }

    /// Tells every follower to re-read transactions and threshold from the database.
    pub fn resync_all(&self) {
        let organizations: Vec<String> = {
            let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            channels.keys().cloned().collect()
        };
        for organization_id in organizations {
            self.publish(Hint::Resync { organization_id });
        }
    }

    /// Tells connections of `key_id` to re-check their key.
    pub fn key_revoked(&self, key_id: &str) {
        // An error only means no connection listens.
        let _ = self.keys.send(KeyHint::Revoked(Arc::from(key_id)));
    }

    /// Tells every connection to re-check its key.
    pub fn recheck_all_keys(&self) {
        let _ = self.keys.send(KeyHint::RecheckAll);
    }

    /// A watch on revocation hints from now on. Take it *before* authenticating, then
    /// narrow it with [`KeyWatch::only`], so a revocation committed in between is not missed.
    pub fn key_watch(&self) -> KeyWatch {
        KeyWatch { receiver: self.keys.subscribe(), key_ids: Vec::new() }
    }

    /// Every revocation hint from now on (for caches of verified keys).
    pub fn key_hints(&self) -> broadcast::Receiver<KeyHint> {
        self.keys.subscribe()
    }

    /// Whether this process receives the database's notifications right now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub(super) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    /// How many subscribers are connected (for metrics and tests).
    pub fn subscriber_count(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.values().map(broadcast::Sender::receiver_count).sum()
    }
}

/// Revocation hints for one connection's credentials.
#[derive(Debug)]
pub struct KeyWatch {
    receiver: broadcast::Receiver<KeyHint>,
    key_ids: Vec<String>,
}

impl KeyWatch {
    /// Narrows the watch to hints naming one of `key_ids` (an API key; a client session
    /// and the key that minted it); with none (the admin token) it never fires.
    pub fn only(mut self, key_ids: &[&str]) -> Self {
        self.key_ids = key_ids.iter().map(|id| (*id).to_owned()).collect();
        self
    }

    /// Waits until the key may have been revoked: a hint names it, or hints may have
    /// been missed. Only a hint: the caller re-checks the key in the database. Cancel-safe.
    pub async fn hinted(&mut self) {
        if self.key_ids.is_empty() {
            return std::future::pending().await;
        }
        loop {
            match self.receiver.recv().await {
                Ok(KeyHint::Revoked(revoked)) if self.key_ids.iter().any(|id| **id == *revoked) => return,
                Ok(KeyHint::Revoked(_)) => continue,
                Ok(KeyHint::RecheckAll) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
            }
        }
    }
}
