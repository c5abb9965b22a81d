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
use entity::webhook_endpoint;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use serde_json::{Map, Value, json};

use crate::db::{JsonRows, sql_time};
use crate::events::{EventHub, Hint, notifications};
use crate::write::{Expect, Writes};
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
    /// Audit rows ([`AUDIT_COLUMNS`]), written in the transaction.
    audits: Vec<Value>,
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
        self.audits.push(json!([
            new_id("aud"),
            organization_id,
            audit.actor.kind().as_str(),
            audit.actor.id(),
            action.as_str(),
            target_id,
            details.to_string(),
            audit.client_address,
            audit.request_id,
            sql_time(at),
        ]));
    }

    /// Wakes this process's top-up worker after the commit.
    pub(crate) fn top_up_started(&mut self) {
        self.top_ups_started += 1;
    }

    /// Commits `txn` with everything in the outbox: webhook events and their deliveries
    /// inside it, the notifications inside it on PostgreSQL, the hub after it on SQLite.
    /// Nothing is announced unless it committed.
    pub(crate) async fn commit(self, txn: DatabaseTransaction, hub: &EventHub) -> Result<(), LedgerError> {
        let writes = Writes::new(txn.get_database_backend());
        self.commit_with(txn, writes, hub).await
    }

    /// [`Outbox::commit`], after the statements `writes` holds, sent with the outbox's own.
    pub(crate) async fn commit_with(
        self,
        txn: DatabaseTransaction,
        mut writes: Writes,
        hub: &EventHub,
    ) -> Result<(), LedgerError> {
        let backend = txn.get_database_backend();
        let deliveries = self.events.len();
        let rows = JsonRows::new(backend);
        if !self.events.is_empty() {
            writes
                .push(&txn, rows.insert("webhook_events", EVENT_COLUMNS, event_rows(&self.events)), Expect::Any)
                .await?;
        }
        if !self.audits.is_empty() {
            writes.push(&txn, rows.insert("audit_events", AUDIT_COLUMNS, self.audits), Expect::Any).await?;
        }
        if let Some(statement) = notifications(backend, &self.hints, &self.revoked)? {
            writes.push(&txn, statement, Expect::Any).await?;
        }
        writes.send(&txn).await?;
        let postgres = backend == DbBackend::Postgres;
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

/// The columns of an audit row, as [`Outbox::audit`] gives them.
const AUDIT_COLUMNS: &[(&str, &str)] = &[
    ("id", "text"),
    ("organization_id", "text"),
    ("actor_type", "text"),
    ("actor_id", "text"),
    ("action", "text"),
    ("target_id", "text"),
    ("details", "text"),
    ("client_address", "text"),
    ("request_id", "text"),
    ("created_at", "timestamptz"),
];

/// The columns of an event's row, as [`event_rows`] gives them.
const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("id", "text"),
    ("organization_id", "text"),
    ("\"type\"", "text"),
    ("payload", "text"),
    ("created_at", "timestamptz"),
    ("fanned_out", "boolean"),
];

/// The rows of `events` ([`EVENT_COLUMNS`]), to be fanned out to their endpoints by a
/// dispatcher ([`crate::Ledger::fan_out_events`]).
fn event_rows(events: &[PendingEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|event| {
            let body = json!({
                "type": event.kind.as_str(),
                "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "data": event.data,
            });
            json!([
                new_id("evt"),
                event.organization_id,
                event.kind.as_str(),
                body.to_string(),
                sql_time(event.at),
                false
            ])
        })
        .collect()
}

/// Whether `endpoint` subscribes to events of `kind` (no types: every type).
pub(crate) fn takes(endpoint: &webhook_endpoint::Model, kind: EventType) -> bool {
    endpoint.event_types.is_empty() || endpoint.event_types.split(',').any(|name| name == kind.as_str())
}
