//! The outbox: every hint a write announces, kept beside its transaction and sent only
//! if that transaction commits.
//!
//! On PostgreSQL the hints are notifications sent inside the transaction, which the
//! database delivers, to every replica, when (and only when) it commits; on SQLite they
//! are published to this process's hub after the commit. Either way no hint exists
//! without its committed change, and each write says what it announces in one place:
//! [`LedgerTx`](crate::LedgerTx) for balance changes, and the few writes outside it
//! (a threshold, a revocation) through the same [`Outbox`].

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};

use crate::LedgerError;
use crate::events::{EventHub, Hint, notify_hint, notify_key_revoked};

/// What one write transaction will announce.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Balance, threshold and held-credit hints, by organization.
    hints: Vec<Hint>,
    /// Ids of API keys and client sessions revoked.
    revoked: Vec<String>,
}

impl Outbox {
    /// Announces `hint` with the commit.
    pub(crate) fn hint(&mut self, hint: Hint) {
        self.hints.push(hint);
    }

    /// Announces the revocation of `credential_id` (an API key or a client session).
    pub(crate) fn revoked(&mut self, credential_id: impl Into<String>) {
        self.revoked.push(credential_id.into());
    }

    /// Commits `txn` with everything in the outbox: the notifications inside it on
    /// PostgreSQL, the hub after it on SQLite. Nothing is announced unless it committed.
    pub(crate) async fn commit(self, txn: DatabaseTransaction, hub: &EventHub) -> Result<(), LedgerError> {
        let postgres = txn.get_database_backend() == DbBackend::Postgres;
        if postgres {
            for hint in &self.hints {
                notify_hint(&txn, hint).await?;
            }
            for id in &self.revoked {
                notify_key_revoked(&txn, id).await?;
            }
        }
        txn.commit().await?;
        if !postgres {
            for hint in self.hints {
                hub.publish(hint);
            }
            for id in &self.revoked {
                hub.key_revoked(id);
            }
        }
        Ok(())
    }
}
