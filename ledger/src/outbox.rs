//! The outbox: every hint a write announces, kept beside its transaction and sent only
//! if that transaction commits.
//!
//! On PostgreSQL the hints are notifications sent inside the transaction, which the
//! database delivers, to every replica, when (and only when) it commits; on SQLite they
//! are published to this process's hub after the commit. Either way no hint exists
//! without its committed change, and each write says what it announces in one place:
//! [`LedgerTx`](crate::LedgerTx) for balance changes, and the few writes outside it
//! (a threshold, a revocation) through the same [`Outbox`].
//!
//! Outgoing webhook events are the outbox's durable part: their rows are written inside
//! the transaction itself, so an event exists if and only if its change committed; the
//! dispatcher, woken after the commit, fans them out to endpoints.

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{audit_event, webhook_endpoint, webhook_event};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait};
use serde_json::{Map, Value, json};

use crate::events::{EventHub, Hint, notify_all};
use crate::{Audit, AuditAction, EventType, LedgerError, new_id};

/// An outgoing event to write with the commit.
#[derive(Debug)]
struct PendingEvent {
    organization_id: String,
    kind: EventType,
    at: DateTime<Utc>,
    data: Map<String, Value>,
}

/// What one write transaction will announce.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Balance, threshold and held-credit hints, by organization.
    hints: Vec<Hint>,
    /// Ids of API keys and client sessions revoked.
    revoked: Vec<String>,
    /// Outgoing webhook events.
    events: Vec<PendingEvent>,
    /// Whether a top-up was started (the worker is woken after the commit).
    top_ups_started: u64,
    /// Audit rows, written in the transaction.
    audits: Vec<audit_event::ActiveModel>,
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

    /// Writes the outgoing event `kind` about the organization, its body's `data` as
    /// given, with the commit.
    pub(crate) fn event(
        &mut self,
        organization_id: &str,
        kind: EventType,
        at: DateTime<Utc>,
        data: Map<String, Value>,
    ) {
        self.events.push(PendingEvent { organization_id: organization_id.to_owned(), kind, at, data });
    }

    /// Records `action` by `audit`'s actor in the audit log, in this transaction: about
    /// `organization_id`, done to `target_id`, with `details` (the input, never a secret).
    pub(crate) fn audit(
        &mut self,
        audit: &Audit,
        at: DateTime<Utc>,
        organization_id: Option<&str>,
        action: AuditAction,
        target_id: Option<&str>,
        details: Value,
    ) {
        self.audits.push(audit_event::ActiveModel {
            id: Set(new_id("aud")),
            organization_id: Set(organization_id.map(str::to_owned)),
            actor_type: Set(audit.actor.kind().as_str().to_owned()),
            actor_id: Set(audit.actor.id().map(str::to_owned)),
            action: Set(action.as_str().to_owned()),
            target_id: Set(target_id.map(str::to_owned)),
            details: Set(details.to_string()),
            client_address: Set(audit.client_address.clone()),
            request_id: Set(audit.request_id.clone()),
            created_at: Set(at),
        });
    }

    /// Wakes this process's top-up worker after the commit.
    pub(crate) fn top_up_started(&mut self) {
        self.top_ups_started += 1;
    }

    /// Commits `txn` with everything in the outbox: webhook events and their deliveries
    /// inside it, the notifications inside it on PostgreSQL, the hub after it on SQLite.
    /// Nothing is announced unless it committed.
    pub(crate) async fn commit(self, txn: DatabaseTransaction, hub: &EventHub) -> Result<(), LedgerError> {
        let deliveries = write_events(&txn, &self.events).await?;
        if !self.audits.is_empty() {
            audit_event::Entity::insert_many(self.audits).exec_without_returning(&txn).await?;
        }
        let postgres = txn.get_database_backend() == DbBackend::Postgres;
        notify_all(&txn, &self.hints, &self.revoked).await?;
        txn.commit().await?;
        if deliveries > 0 {
            hub.deliveries().notify_one();
        }
        if self.top_ups_started > 0 {
            hub.top_ups().notify_one();
        }
        crate::metrics::committed(self.top_ups_started, self.events.iter().map(|event| event.kind));
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

/// Writes `events`, to be fanned out to their endpoints by a dispatcher
/// ([`crate::Ledger::fan_out_events`]); returns how many.
async fn write_events(txn: &DatabaseTransaction, events: &[PendingEvent]) -> Result<usize, LedgerError> {
    let rows: Vec<webhook_event::ActiveModel> = events
        .iter()
        .map(|event| {
            let body = json!({
                "type": event.kind.as_str(),
                "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "data": event.data,
            });
            webhook_event::ActiveModel {
                id: Set(new_id("evt")),
                organization_id: Set(event.organization_id.clone()),
                event_type: Set(event.kind.as_str().to_owned()),
                payload: Set(body.to_string()),
                created_at: Set(event.at),
                fanned_out: Set(false),
            }
        })
        .collect();
    for chunk in rows.chunks(500) {
        webhook_event::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await?;
    }
    Ok(rows.len())
}

/// Whether `endpoint` subscribes to events of `kind` (no types: every type).
pub(crate) fn takes(endpoint: &webhook_endpoint::Model, kind: EventType) -> bool {
    endpoint.event_types.is_empty() || endpoint.event_types.split(',').any(|name| name == kind.as_str())
}
