//! Organization API keys: random secrets with a recognizable prefix, stored only as a
//! SHA-256 hash. A secret has 256 random bits, so a fast hash is enough: nothing short of
//! the secret itself finds the row.
//!
//! Verified keys are cached in memory ([`KeyCache`]) so that authenticating a request
//! needs no database round trip. Revocation still takes effect at once: the revoking
//! process evicts the key before it answers, every other replica evicts it on the
//! revocation hint (NOTIFY, milliseconds), a lost `LISTEN` connection empties the cache,
//! and each entry is re-verified against the database at least every 30 s whatever
//! happens (a backstop: hints are what make revocation immediate). `last_used_at` is
//! written in the background, a few keys per statement, at most once a minute per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use entity::api_key;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};
use sha2::{Digest, Sha256};

use super::events::{EventHub, KeyHint};
use super::outbox::Outbox;
use super::{AuditAction, Clock, Ledger, LedgerError, check_label, new_id};

/// What every API key secret starts with, so leaked keys are easy to recognize and scan for.
pub const API_KEY_PREFIX: &str = "crk_";
/// How many leading characters of a secret are kept in the clear to tell keys apart.
const SHOWN_PREFIX_LEN: usize = 12;
/// `last_used_at` is refreshed at most this often, so reads do not become writes.
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

/// How long a verified key is trusted without asking the database again, should every
/// revocation hint have been lost.
const REVERIFY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the uses noted since are written as `last_used_at`.
const LAST_USED_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);
/// Most keys cached; beyond, the cache starts again empty (a bound, not a policy).
const MAX_CACHED_KEYS: usize = 100_000;

/// A verified key, and when it was last checked against the database.
#[derive(Clone, Debug)]
struct Cached {
    key: ApiKey,
    verified: Instant,
}

/// Keys verified recently, by secret hash (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyCache {
    entries: Arc<Mutex<HashMap<String, Cached>>>,
    /// Set once the task that evicts revoked keys runs.
    watching: Arc<OnceLock<()>>,
    /// Keys used since the last write of `last_used_at`, and the queue's writer.
    used: Arc<Mutex<Vec<String>>>,
    writing: Arc<OnceLock<()>>,
}

impl KeyCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts evicting on revocation hints (once; needs a Tokio runtime).
    fn watch(&self, hub: &EventHub) {
        self.watching.get_or_init(|| {
            let mut hints = hub.key_hints();
            let entries = Arc::downgrade(&self.entries);
            tokio::spawn(async move {
                loop {
                    let hint = hints.recv().await;
                    let Some(entries) = entries.upgrade() else { return };
                    let mut entries = entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    match hint {
                        Ok(KeyHint::Revoked(id)) => entries.retain(|_, cached| *cached.key.id != *id),
                        // Hints may have been missed: trust nothing cached.
                        Ok(KeyHint::RecheckAll) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            entries.clear()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        });
    }

    /// Notes a use of `key_id`, for the writer that records uses every few seconds in a
    /// statement or two, however many keys (needs a Tokio runtime).
    fn note_use(&self, db: &sea_orm::DatabaseConnection, clock: &Clock, key_id: &str) {
        self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(key_id.to_owned());
        self.writing.get_or_init(|| {
            let used = Arc::downgrade(&self.used);
            let (db, clock) = (db.clone(), clock.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LAST_USED_FLUSH).await;
                    let Some(used) = used.upgrade() else { return };
                    let ids = std::mem::take(&mut *used.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
                    drop(used);
                    let at = clock.now();
                    for chunk in ids.chunks(500) {
                        // Conditional, so replicas racing on a key write once per interval.
                        let written = api_key::Entity::update_many()
                            .col_expr(api_key::Column::LastUsedAt, Some(at).into())
                            .filter(api_key::Column::Id.is_in(chunk.iter().cloned()))
                            .filter(
                                Condition::any()
                                    .add(api_key::Column::LastUsedAt.is_null())
                                    .add(api_key::Column::LastUsedAt.lt(at - LAST_USED_RESOLUTION)),
                            )
                            .exec(&db)
                            .await;
                        if let Err(error) = written {
                            tracing::debug!(%error, "could not record keys' last use");
                        }
                    }
                }
            });
        });
    }

    /// Forgets `key_id` (after revoking it here).
    fn evict(&self, key_id: &str) {
        self.entries().retain(|_, cached| cached.key.id != key_id);
    }
}

/// An API key's public description (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// The organization it acts for.
    pub organization_id: String,
    /// Label.
    pub name: String,
    /// Leading characters of the secret.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last authenticated use, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_key::Model> for ApiKey {
    fn from(row: api_key::Model) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// Hex SHA-256 of a secret: the only form in which secrets are stored.
pub(super) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh secret of 256 random bits after `prefix`.
pub(super) fn new_secret(prefix: &str) -> Result<String, LedgerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| LedgerError::internal(format!("no randomness: {error}")))?;
    Ok(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

impl Ledger {
    /// Creates a key for the organization; returns it with its secret, which is not stored.
    #[tracing::instrument(skip(self))]
    pub async fn create_api_key(&self, organization_id: &str, name: &str) -> Result<(ApiKey, String), LedgerError> {
        check_label("name", name)?;
        if self.organization(organization_id).await?.is_none() {
            return Err(LedgerError::OrganizationNotFound);
        }
        let secret = new_secret(API_KEY_PREFIX)?;
        let txn = self.begin_write().await?;
        let row = api_key::ActiveModel {
            id: Set(new_id("key")),
            organization_id: Set(organization_id.to_owned()),
            name: Set(name.trim().to_owned()),
            prefix: Set(secret.chars().take(SHOWN_PREFIX_LEN).collect()),
            secret_hash: Set(hash_secret(&secret)),
            created_at: Set(self.now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        let mut outbox = Outbox::default();
        let details = serde_json::json!({ "name": row.name, "prefix": row.prefix });
        self.audit_into(&mut outbox, Some(organization_id), AuditAction::CreateApiKey, Some(&row.id), details);
        outbox.commit(txn, &self.events).await?;
        Ok((ApiKey::from(row), secret))
    }

    /// Revokes a key (idempotent: revoking twice keeps the first time) and, in the same
    /// transaction, the client sessions it minted. Once the revocation commits, a hint
    /// tells every replica's open WebSockets of that key (and of those sessions) to
    /// re-check it (and so close); HTTP requests authenticate against the database anyway.
    #[tracing::instrument(skip(self))]
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKey, LedgerError> {
        let txn = self.begin_write().await?;
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Some(self.now()).into())
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let Some(key) = api_key::Entity::find_by_id(id.to_owned()).one(&txn).await?.map(ApiKey::from) else {
            txn.rollback().await?;
            return Err(LedgerError::ApiKeyNotFound);
        };
        let mut outbox = Outbox::default();
        Self::revoke_sessions_of_key(&txn, &key.id, self.now(), &mut outbox).await?;
        // Also for a key revoked before: a repeated revoke re-sends the hint, harmlessly.
        outbox.revoked(key.id.clone());
        let details = serde_json::json!({ "revokedAt": key.revoked_at });
        let organization = Some(key.organization_id.as_str());
        self.audit_into(&mut outbox, organization, AuditAction::RevokeApiKey, Some(&key.id), details);
        outbox.commit(txn, &self.events).await?;
        // Before answering: this replica's next request with the key is refused.
        self.keys.evict(&key.id);
        Ok(key)
    }

    /// Ids of the keys revoked at or after `since` (for hinting revocations that
    /// another process committed).
    pub async fn api_keys_revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<String>, LedgerError> {
        Ok(api_key::Entity::find()
            .select_only()
            .column(api_key::Column::Id)
            .filter(api_key::Column::RevokedAt.gte(since))
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// A key by id.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, LedgerError> {
        Ok(api_key::Entity::find_by_id(id.to_owned()).one(&self.db).await?.map(ApiKey::from))
    }

    /// The key whose secret this is if this process verified it recently (and no
    /// revocation hint has evicted it since); never asks the database.
    pub fn cached_api_key(&self, secret: &str) -> Option<ApiKey> {
        if !secret.starts_with(API_KEY_PREFIX) {
            return None;
        }
        self.keys.entries().get(&hash_secret(secret)).map(|cached| cached.key.clone())
    }

    /// The live (unrevoked) key whose secret this is, noting its use: from the cache
    /// when it was verified in the last second, else from the database.
    pub async fn authenticate_api_key(&self, secret: &str) -> Result<Option<ApiKey>, LedgerError> {
        if !secret.starts_with(API_KEY_PREFIX) {
            return Ok(None);
        }
        self.keys.watch(&self.events);
        let hash = hash_secret(secret);
        let cached = {
            let mut entries = self.keys.entries();
            match entries.get_mut(&hash) {
                Some(cached) if cached.verified.elapsed() < REVERIFY_AFTER => Some(cached.key.clone()),
                Some(cached) => {
                    // This request re-verifies; the others meanwhile trust the entry.
                    cached.verified = Instant::now();
                    None
                }
                None => None,
            }
        };
        let key = match cached {
            Some(key) => key,
            None => {
                let found = api_key::Entity::find()
                    .filter(api_key::Column::SecretHash.eq(&hash))
                    .filter(api_key::Column::RevokedAt.is_null())
                    .one(&self.db)
                    .await?
                    .map(ApiKey::from);
                let mut entries = self.keys.entries();
                let Some(key) = found else {
                    entries.remove(&hash);
                    return Ok(None);
                };
                if entries.len() >= MAX_CACHED_KEYS {
                    entries.clear();
                }
                let previous = entries.insert(hash.clone(), Cached { key: key.clone(), verified: Instant::now() });
                // Keep the newest `last_used_at` this process knows of.
                match previous.and_then(|previous| previous.key.last_used_at) {
                    Some(last) if key.last_used_at.is_none_or(|stored| stored < last) => {
                        if let Some(entry) = entries.get_mut(&hash) {
                            entry.key.last_used_at = Some(last);
                        }
                        ApiKey { last_used_at: Some(last), ..key }
                    }
                    _ => key,
                }
            }
        };
        let at = self.now();
        if key.last_used_at.is_none_or(|last| at - last >= LAST_USED_RESOLUTION) {
            if let Some(entry) = self.keys.entries().get_mut(&hash) {
                entry.key.last_used_at = Some(at);
            }
            // In the background: a request does not wait for this write.
            self.keys.note_use(&self.db, &self.clock, &key.id);
        }
        Ok(Some(key))
    }
}
