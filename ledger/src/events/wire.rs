//! What travels from committing code to subscribers: hints, never data.
//!
//! A hint names a committed change and nothing more: the organization and the
//! transaction's sequence number, just the organization for a threshold, or an API key
//! id for a revocation. Anyone who can send on the channel (a `pg_notify` typed by hand,
//! a bug in another replica) can therefore at most make a follower read the database
//! once more; what subscribers see is always what the database holds.

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, Statement};
use serde::{Deserialize, Serialize};

use crate::{CreditTransaction, LedgerError};

/// The PostgreSQL channel balance hints travel on.
pub const BALANCE_CHANNEL: &str = "credits_balance_events";
/// The PostgreSQL channel API-key revocation hints travel on (payload: the key id).
pub const KEY_CHANNEL: &str = "credits_key_revocations";
/// Longest identifier a hint may carry; anything longer is not one of ours.
const MAX_ID_LEN: usize = 64;

/// Something the ledger committed, as the committing code describes it. Only its
/// [`BalanceEvent::hint`] leaves that code: the other fields are never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalanceEvent {
    /// A committed transaction.
    Changed {
        /// The organization.
        organization_id: String,
        /// Its sequence number (the balance version after it).
        seq: i64,
        /// The balance after it.
        balance: i64,
        /// `ctx_…`
        transaction_id: String,
        /// Commit time.
        at: DateTime<Utc>,
    },
    /// The organization's low-balance threshold was set or cleared.
    Threshold {
        /// The organization.
        organization_id: String,
        /// The new threshold.
        threshold: Option<i64>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Transactions may have been committed without a hint for each (say, by a webhook
    /// that changed the balance): followers re-read from the database.
    Resync {
        /// The organization.
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

    /// What is announced of it: which organization, and which change.
    pub fn hint(&self) -> Hint {
        match self {
            Self::Changed { organization_id, seq, .. } => {
                Hint::Changed { organization_id: organization_id.clone(), seq: *seq }
            }
            Self::Threshold { organization_id, .. } => Hint::Threshold { organization_id: organization_id.clone() },
            Self::Resync { organization_id } => Hint::Resync { organization_id: organization_id.clone() },
        }
    }
}

/// A hint that an organization's history or settings changed: the wire format on
/// PostgreSQL `NOTIFY` and what the in-process hub carries. Unknown fields are ignored,
/// so the fuller payloads of older replicas still read as hints during a rolling deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Hint {
    /// Transaction `seq` (and perhaps more) was committed.
    #[serde(rename = "c")]
    Changed {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
        /// The committed transaction's sequence number.
        #[serde(rename = "s")]
        seq: i64,
    },
    /// The low-balance threshold was set or cleared.
    #[serde(rename = "h")]
    Threshold {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
    },
    /// Credits were held or a hold ended without a transaction: `held` and `available`
    /// changed, the history did not.
    #[serde(rename = "l")]
    Held {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
    },
    /// Anything may have changed: re-read transactions and threshold.
    #[serde(rename = "r")]
    Resync {
        /// The organization.
        #[serde(rename = "o")]
        organization_id: String,
    },
}

impl Hint {
    /// The organization it concerns.
    pub fn organization_id(&self) -> &str {
        match self {
            Self::Changed { organization_id, .. }
            | Self::Threshold { organization_id }
            | Self::Held { organization_id }
            | Self::Resync { organization_id } => organization_id,
        }
    }

    /// The `NOTIFY` payload.
    pub fn encode(&self) -> Result<String, LedgerError> {
        serde_json::to_string(self).map_err(|error| LedgerError::internal(error.to_string()))
    }

    /// Reads a `NOTIFY` payload; `None` for anything that is not a well-formed hint.
    pub fn decode(payload: &str) -> Option<Self> {
        if payload.len() > 4 * MAX_ID_LEN {
            return None;
        }
        let hint: Self = serde_json::from_str(payload).ok()?;
        plausible_id(hint.organization_id()).then_some(hint)
    }
}

/// Reads a revocation payload: the key id, if it looks like one.
pub fn decode_key_id(payload: &str) -> Option<&str> {
    plausible_id(payload).then_some(payload)
}

/// Whether `id` could be one of our identifiers (a prefix, `_`, URL-safe characters).
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// The statement that sends every hint of `hints`, then a revocation hint for every key
/// id of `revoked`, as PostgreSQL notifications, all at once (a batch of many
/// organizations makes no round trip per organization); inside a transaction they are
/// delivered only if and when that transaction commits. None on SQLite.
pub(crate) fn notifications(
    backend: DbBackend,
    hints: &[Hint],
    revoked: &[String],
) -> Result<Option<Statement>, LedgerError> {
    if backend != DbBackend::Postgres || (hints.is_empty() && revoked.is_empty()) {
        return Ok(None);
    }
    let mut notifications = Vec::with_capacity(hints.len() + revoked.len());
    for hint in hints {
        notifications.push(serde_json::json!([BALANCE_CHANNEL, hint.encode()?]));
    }
    notifications.extend(revoked.iter().map(|key_id| serde_json::json!([KEY_CHANNEL, key_id])));
    Ok(Some(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify(n ->> 0, n ->> 1) FROM json_array_elements($1::text::json) AS n",
        [serde_json::Value::Array(notifications).to_string().into()],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_carry_no_data_and_round_trip() {
        let hint = Hint::Changed { organization_id: "org_1".into(), seq: 7 };
        let payload = hint.encode().unwrap();
        assert_eq!(payload, r#"{"k":"c","o":"org_1","s":7}"#);
        assert_eq!(Hint::decode(&payload), Some(hint));
    }

    #[test]
    fn older_fuller_payloads_read_as_hints() {
        let old = r#"{"k":"c","o":"org_1","s":7,"b":5,"t":"ctx_1","a":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(Hint::decode(old), Some(Hint::Changed { organization_id: "org_1".into(), seq: 7 }));
        let old = r#"{"k":"h","o":"org_1","h":10,"a":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(Hint::decode(old), Some(Hint::Threshold { organization_id: "org_1".into() }));
    }

    #[test]
    fn junk_is_not_a_hint() {
        for payload in ["", "hello", "{}", r#"{"k":"c","o":"org 1","s":1}"#, r#"{"k":"x","o":"org_1"}"#] {
            assert_eq!(Hint::decode(payload), None, "{payload}");
        }
        assert_eq!(Hint::decode(&format!(r#"{{"k":"h","o":"{}"}}"#, "a".repeat(100))), None);
        assert_eq!(decode_key_id("key_abc"), Some("key_abc"));
        assert_eq!(decode_key_id("key abc; DROP"), None);
    }
}
