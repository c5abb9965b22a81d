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
//! Outgoing webhook events are the outbox's durable part: their rows, and one pending
//! delivery for each enabled endpoint that takes each, are written inside the
//! transaction itself (two statements whose texts do not change with the batch, sent with
//! the batch's others), so an event and its deliveries exist if and only if its change
//! committed; the dispatcher, woken after the commit, claims the deliveries.

use chrono::{DateTime, SecondsFormat, Utc};
use entity::webhook_endpoint;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
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
        let rows = JsonRows::new(backend);
        let mut deliveries = None;
        if !self.events.is_empty() {
            let (events, fanned) = event_rows(&self.events);
            writes.push(&txn, rows.insert("webhook_events", EVENT_COLUMNS, events), Expect::Any).await?;
            deliveries = writes.push(&txn, fan_out(backend, fanned), Expect::Any).await?;
        }
        if !self.audits.is_empty() {
            writes.push(&txn, rows.insert("audit_events", AUDIT_COLUMNS, self.audits), Expect::Any).await?;
        }
        if let Some(statement) = notifications(backend, &self.hints, &self.revoked)? {
            writes.push(&txn, statement, Expect::Any).await?;
        }
        let counts = writes.send(&txn).await?;
        let postgres = backend == DbBackend::Postgres;
        txn.commit().await?;
        // The dispatcher is woken only for deliveries: events no endpoint takes wake nothing.
        if deliveries.is_some_and(|held| counts.of(held) > 0) {
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

/// The rows of `events` ([`EVENT_COLUMNS`]), and of each its id, organization, type and
/// time, for [`fan_out`].
fn event_rows(events: &[PendingEvent]) -> (Vec<Value>, Vec<Value>) {
    events
        .iter()
        .map(|event| {
            let id = new_id("evt");
            let at = sql_time(event.at);
            let body = json!({
                "type": event.kind.as_str(),
                "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "data": event.data,
            });
            let fanned = json!([id, event.organization_id, event.kind.as_str(), at]);
            (json!([id, event.organization_id, event.kind.as_str(), body.to_string(), at, true]), fanned)
        })
        .unzip()
}

/// A statement writing one pending delivery, due at once, of each event of `events`
/// (rows of id, organization, type and time) to each enabled endpoint that takes it: the
/// organization's own and those of every organization, subscribed to its type or to every
/// type (`event_types` empty; else its names, comma-separated, as [`takes`] reads them).
/// Endpoints are matched in the database, so the statement is the same for any batch and
/// needs no look-up of its own. A delivery's id is `whd_`, its event's millisecond (the
/// first 12 digits of the event's UUIDv7) and 20 random hexadecimal digits (80 bits).
///
/// On PostgreSQL the endpoints it may write to are held until the transaction ends, in
/// the order of their ids (so two batches cannot wait for each other), by the weakest
/// lock, which only a deletion or a `FOR UPDATE` waits for: deleting or disabling an
/// endpoint locks it first, so that it fails the deliveries of a batch that committed
/// before it, and a batch after it finds the endpoint gone or off. SQLite has one writer.
pub(crate) fn fan_out(backend: DbBackend, events: Vec<Value>) -> Statement {
    let rows = JsonRows::new(backend);
    let (random, contains) = match backend {
        DbBackend::Postgres => ("substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)", "strpos"),
        _ => ("lower(hex(randomblob(10)))", "instr"),
    };
    let events_sql = format!(
        "SELECT {} AS event_id, {} AS organization_id, {} AS kind, {} AS at FROM {}",
        rows.column(0, "text"),
        rows.column(1, "text"),
        rows.column(2, "text"),
        rows.column(3, "timestamptz"),
        rows.source(1),
    );
    let insert = format!(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at) \
         SELECT 'whd_' || substr(v.event_id, 5, 12) || {random}, e.id, v.event_id, 'PENDING', 0, v.at, v.at"
    );
    let matches = format!(
        "(e.organization_id IS NULL OR e.organization_id = v.organization_id) \
         AND (e.event_types = '' OR {contains}(',' || e.event_types || ',', ',' || v.kind || ',') > 0)"
    );
    let sql = match backend {
        DbBackend::Postgres => format!(
            "WITH v AS ({events_sql}), \
             e AS (SELECT id, organization_id, event_types FROM webhook_endpoints WHERE enabled \
             AND (organization_id IS NULL OR organization_id IN (SELECT organization_id FROM v)) \
             ORDER BY id FOR KEY SHARE) \
             {insert} FROM v JOIN e ON {matches}"
        ),
        _ => format!("{insert} FROM ({events_sql}) AS v JOIN webhook_endpoints e ON e.enabled AND {matches}"),
    };
    Statement::from_sql_and_values(backend, sql, [Value::Array(events).to_string().into()])
}

/// Whether `endpoint` subscribes to events of `kind` (no types: every type), as
/// [`fan_out`] decides it in the database.
pub(crate) fn takes(endpoint: &webhook_endpoint::Model, kind: EventType) -> bool {
    endpoint.event_types.is_empty() || endpoint.event_types.split(',').any(|name| name == kind.as_str())
}
