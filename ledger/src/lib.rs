//! The credit ledger: organizations' balances, lots, holds and their immutable
//! transaction history, over SeaORM.
//!
//! This crate does not depend on GraphQL, HTTP or Stripe; adapters call it with parsed
//! domain values and map [`LedgerError`] to their own protocol.
//!
//! Every change of balance is decided in one place, the pure `decide` module, under the
//! organization's lock, inside a [`LedgerTx`] that writes the results and announces them
//! on commit. Concurrent consumes, grants and holds share transactions through the group
//! committer: one locked read of each organization, every request decided against it in
//! memory in arrival order, one write of the results, one commit.
//!
//! # Layout
//! - `model/`: the nouns, one file each (`amount`, `transaction` with its kinds, requests
//!   and allocations, `balance`, `lot`, `hold`, `organization`, `event` (the outgoing
//!   event types), `usage` (report totals), `audit` (who acts, from where, and the
//!   audited actions)), all re-exported here.
//! - `decide.rs`: the state of one organization as locked, and the pure decisions over
//!   it (consume, credit, clawback, void, holds, settling expiries, balance alerts).
//!   Private.
//! - `write/`: [`LedgerTx`], one write transaction: decides each operation under the
//!   lock (`mod.rs`), reads what it decides against (`load.rs`: states, kept states),
//!   writes once (`flush.rs`: rows, the usage rollup, and the outgoing events decided
//!   from where each organization stood before and after) and answers billing's
//!   look-ups (`lookups.rs`), sending the writes of a commit together (`writes.rs`: one
//!   statement on PostgreSQL); `outbox.rs`: everything a write announces, the webhook
//!   events with their deliveries and the audit rows written in its transaction, the
//!   hints sent only if it commits. A [`Ledger`] handle made [`Ledger::with_audit`]
//!   records who acts in the audit rows of its writes.
//! - `commit/`: group commit of [`Ledger`]'s consumes, grants and hold operations
//!   (`mod.rs`), the committer's `Op` and `Done` (`op.rs`), and idempotency and retries,
//!   one owner for both (`idempotency.rs`); `holds.rs`: the hold facade.
//! - `read/`: reads as of now (`history.rs`, `lots.rs`, `usage.rs`: reports from the
//!   rollup, `audit.rs`: the audit log, `verify.rs`: every invariant of the books). `webhooks.rs`: endpoints, events and deliveries as stored, claimed under a
//!   lease by the server's dispatcher.
//! - `events/`: live events as hints (wire format, hub, PostgreSQL `LISTEN`, the
//!   gap-free follower).
//! - `api_keys.rs`, `client_sessions.rs`, `organizations.rs`: credentials and tenants.
//!   Credentials stay in this crate: a revocation commits with its hint through the
//!   outbox, and the write transaction that makes that true is not handed out.
//! - `db.rs`: connecting, how a write transaction begins, the availability probe,
//!   SQLite's online copy; `metrics.rs`: batch sizes and commit times through the
//!   `metrics` facade; `error.rs`: [`LedgerError`].
//!
//! Adding an operation: its request (and result) in `model/`, one function in
//! `decide.rs`, one [`LedgerTx`] method that calls it under the lock, and one [`Ledger`]
//! method. To batch it, it also becomes a variant of `commit/op.rs`'s `Op` and `Done`,
//! and [`LedgerTx::apply`] routes it; a keyed one submits through `submit_keyed`.

mod api_keys;
mod client_sessions;
mod commit;
pub mod db;
mod decide;
mod error;
pub mod events;
mod holds;
pub mod metrics;
mod model;
mod organizations;
mod outbox;
mod read;
pub mod topups;
pub mod webhooks;
mod write;

pub use api_keys::{API_KEY_PREFIX, ApiKey};
pub use client_sessions::{
    CLIENT_SESSION_TOKEN_PREFIX, ClientScope, ClientScopes, ClientSession, DEFAULT_SESSION_TTL_SECS,
    MAX_SESSION_TTL_SECS, SessionTtl,
};
pub use commit::idempotency::retrying;
pub use error::{LedgerError, Retryable};
pub use holds::{HoldCursor, HoldFilter};
pub use model::*;
pub use read::history::{ExportedTransaction, Page, PageRequest, TransactionFilter};
pub use read::lots::{LotFilter, as_of};
pub use read::usage::{MAX_BUCKETS, UsageBucket, UsageGroupBy, UsageInterval, UsageQuery, UsageReport};
pub use read::verify::{Broken, Verification};
pub use write::{Clawback, LedgerTx};

use chrono::{DateTime, SubsecRound, Utc};
use entity::credit_balance;
use sea_orm::{
    AccessMode, ColumnTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QuerySelect,
    TransactionOptions, TransactionTrait,
};

/// The ledger over one database: cheap to clone, shared by every request.
#[derive(Clone, Debug)]
pub struct Ledger {
    db: DatabaseConnection,
    events: events::EventHub,
    availability: crate::db::Availability,
    committer: commit::Committer,
    keys: api_keys::KeyCache,
    clock: Clock,
    /// Seals webhook signing secrets at rest, when a key is configured.
    seal: Option<webhooks::SecretSeal>,
    /// Who acts through this handle, and from where: what its audited writes record
    /// (none: the server itself, `SYSTEM`).
    audit: Option<std::sync::Arc<Audit>>,
}

/// Where the ledger reads the time: the system clock, or one a test moves by hand.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(std::sync::Arc::new(|| Utc::now().trunc_subsecs(6)))
    }

    /// A clock that answers `read()`, at microsecond precision.
    pub fn from_fn(read: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(move || read().trunc_subsecs(6)))
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Ledger {
    /// A ledger over `db`, whose schema must be migrated.
    pub fn new(db: DatabaseConnection) -> Self {
        let availability = crate::db::Availability::default();
        Self {
            db,
            events: events::EventHub::default(),
            committer: commit::Committer::new(availability.clone()),
            availability,
            keys: Default::default(),
            clock: Clock::system(),
            seal: None,
            audit: None,
        }
    }

    /// The same ledger acting for `audit`'s actor: its audited writes (grants, voids,
    /// settings, credentials, webhook endpoints) record who and from where, in their
    /// own transaction.
    pub fn with_audit(&self, audit: Audit) -> Self {
        Self { audit: Some(std::sync::Arc::new(audit)), ..self.clone() }
    }

    /// Who acts through this handle.
    pub(crate) fn auditor(&self) -> std::sync::Arc<Audit> {
        self.audit.clone().unwrap_or_else(Audit::shared_system)
    }

    /// Records `action` by this handle's actor in `outbox`, for the writes outside
    /// [`LedgerTx`] (they commit through the outbox too).
    pub(crate) fn audit_into(
        &self,
        outbox: &mut outbox::Outbox,
        organization_id: Option<&str>,
        action: AuditAction,
        target_id: Option<&str>,
        details: serde_json::Value,
    ) {
        outbox.audit(&self.auditor(), self.now(), organization_id, action, target_id, details);
    }

    /// The same ledger sealing webhook signing secrets with `seal` (AES-256-GCM) before
    /// they are stored; secrets stored plain earlier stay readable.
    pub fn with_secret_seal(mut self, seal: webhooks::SecretSeal) -> Self {
        self.seal = Some(seal);
        self
    }

    /// The same ledger reading the time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time as the ledger sees it.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether the database is known to be unreachable right now (see
    /// [`crate::db::Availability`]); started by [`Ledger::start_event_listener`].
    pub fn is_unavailable(&self) -> bool {
        self.availability.is_down()
    }

    /// The hub live subscribers of this process listen on.
    pub fn events(&self) -> &events::EventHub {
        &self.events
    }

    /// Starts feeding this process's hub with what other processes commit: on
    /// PostgreSQL from the database's notifications (every replica's commits), on SQLite
    /// by polling for revoked API keys (the CLI's). Needs a Tokio runtime.
    pub fn start_event_listener(&self) {
        self.availability.start_probe(&self.db);
        if self.db.get_database_backend() == DbBackend::Postgres {
            tokio::spawn(events::listen_postgres(self.db.clone(), self.events.clone()));
        } else {
            tokio::spawn(events::poll_sqlite_revocations(self.clone()));
        }
    }

    /// Whether live events flow: always on SQLite; on PostgreSQL once `LISTEN` is up.
    pub fn events_ready(&self) -> bool {
        self.db.get_database_backend() != DbBackend::Postgres || self.events.is_listening()
    }

    /// How many group-commit batches of this process failed as a whole and were
    /// committed again one by one: each is a conflict the batch did not foresee or a
    /// database fault. Zero in steady running.
    pub fn batch_fallbacks(&self) -> u64 {
        self.committer.fallbacks()
    }

    /// Where the background workers' bookkeeping writes (the outgoing webhooks' claims
    /// and attempts, and the fan-out of events an older version left to them; auto
    /// top-ups' claims and retries): on a SQLite file, the committer's own connection, so
    /// that it and the committer's batches take turns on it, each waiting for the other's
    /// transaction rather than meeting at SQLite's lock, whose busy handler sleeps between
    /// tries (up to 100 ms a sleep: a grant storm with a webhook endpoint had p99 147–194
    /// ms and its slowest grant 0.7–1.6 s, `docs/performance.md`, session 15). Elsewhere
    /// the pool.
    pub(crate) async fn bookkeeper(&self) -> DatabaseConnection {
        if self.db.get_database_backend() != sea_orm::DbBackend::Sqlite {
            return self.db.clone();
        }
        self.committer.writer(&self.db).await
    }

    /// The underlying connection pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The shared pool's connections now: (idle, in use).
    pub fn pool_connections(&self) -> (u32, u32) {
        crate::db::pool_connections(&self.db)
    }

    /// Takes `amount` credits from the organization's balance, atomically, or fails with
    /// [`LedgerError::InsufficientCredits`] and changes nothing.
    ///
    /// With an idempotency key, a retry returns the original transaction (`replayed`),
    /// and the same key with a different request is [`LedgerError::IdempotencyConflict`].
    #[tracing::instrument(skip(self, request), fields(organization = %request.organization_id, amount = request.amount.get()))]
    pub async fn consume(&self, request: ConsumeRequest) -> Result<Applied, LedgerError> {
        self.change(ChangeRequest {
            organization_id: request.organization_id,
            kind: TransactionKind::Consumption,
            delta: -request.amount.get(),
            description: Some(request.description),
            reference_type: request.reference_type,
            reference_id: request.reference_id,
            idempotency_key: request.idempotency_key,
            lot: None,
            by: request.by,
        })
        .await
    }

    /// Adds `amount` credits to the organization's balance as a `GRANT` transaction.
    ///
    /// With an idempotency key, a retry with every input the same (the lot's terms
    /// included) returns the original (`replayed`); any other input under the key is
    /// [`LedgerError::IdempotencyConflict`].
    #[tracing::instrument(skip(self, request), fields(organization = %request.organization_id, amount = request.amount.get()))]
    pub async fn grant(&self, mut request: GrantRequest) -> Result<Applied, LedgerError> {
        request.by.audit.get_or_insert_with(|| self.auditor());
        self.change(ChangeRequest {
            organization_id: request.organization_id,
            kind: TransactionKind::Grant,
            delta: request.amount.get(),
            description: Some(request.description),
            reference_type: None,
            reference_id: None,
            idempotency_key: request.idempotency_key,
            lot: Some(request.lot),
            by: request.by,
        })
        .await
    }

    /// Applies one change through the committer, with idempotent replay.
    async fn change(&self, request: ChangeRequest) -> Result<Applied, LedgerError> {
        let answer = |done| match done {
            commit::op::Done::Changed(transaction, balance, lot) => {
                Some(Applied { transaction, balance, lot, replayed: false })
            }
            _ => None,
        };
        self.submit_keyed(commit::op::Op::Change(request.clone()), answer, || self.replay_change(&request)).await
    }

    /// The organization's current balance.
    pub async fn balance(&self, organization_id: &str) -> Result<Balance, LedgerError> {
        let row = crate::db::balance_row(&self.db, organization_id).await?.ok_or(LedgerError::OrganizationNotFound)?;
        Ok(self.settled(vec![row]).await?.remove(0))
    }

    /// A balance by its own id (`bal_…`), if it exists.
    pub async fn balance_by_id(&self, id: &str) -> Result<Option<Balance>, LedgerError> {
        let rows: Vec<_> = credit_balance::Entity::find_by_id(id.to_owned()).one(&self.db).await?.into_iter().collect();
        Ok(self.settled(rows).await?.pop())
    }

    /// Balances of many organizations at once (for batching loaders); unknown ids are absent.
    pub async fn balances(&self, organization_ids: &[String]) -> Result<Vec<Balance>, LedgerError> {
        let rows = credit_balance::Entity::find()
            .filter(credit_balance::Column::OrganizationId.is_in(organization_ids.iter().cloned()))
            .all(&self.db)
            .await?;
        self.settled(rows).await
    }

    /// Starts writing due expiries of idle organizations: every second, each organization
    /// whose next expiry (or hold deadline) has passed is locked and settled through a
    /// [`LedgerTx`], so its `EXPIRY` entries (and their live events) are written within a
    /// few seconds even when nothing else happens to it. Every replica may run this: the
    /// decision is made under the organization's lock, so a second sweeper finds nothing
    /// left to do. Needs a Tokio runtime; ends with the last clone of this ledger's pool.
    pub fn start_sweeper(&self) {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = ledger.sweep().await {
                    tracing::warn!(%error, "expiry sweep failed; retrying");
                }
            }
        });
    }

    /// One sweep: settles up to a hundred organizations whose next event is due.
    pub async fn sweep(&self) -> Result<usize, LedgerError> {
        let due: Vec<String> = credit_balance::Entity::find()
            .select_only()
            .column(credit_balance::Column::OrganizationId)
            .filter(credit_balance::Column::NextEventAt.lte(self.now()))
            .limit(100u64)
            .into_tuple()
            .all(&self.db)
            .await?;
        for organization_id in &due {
            retrying(|| async {
                let mut tx = self.begin().await?;
                let settled = tx.balance(organization_id).await;
                tx.finish(settled).await
            })
            .await?;
        }
        Ok(due.len())
    }

    /// Balances as of now: where an expiry or a hold's TTL has come and is not written
    /// yet, `held` and `available` are what the decision step will make of them (expired
    /// credits are never counted as available, even before the entry is written).
    async fn settled(&self, rows: Vec<credit_balance::Model>) -> Result<Vec<Balance>, LedgerError> {
        let at = self.now();
        let due: Vec<String> = rows
            .iter()
            .filter(|row| row.next_event_at.is_some_and(|next| next <= at))
            .map(|row| row.organization_id.clone())
            .collect();
        if due.is_empty() {
            return Ok(rows.into_iter().map(Balance::from).collect());
        }
        let (fresh, mut states) = self.snapshot(&due).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let row =
                    fresh.iter().find(|fresh| fresh.organization_id == row.organization_id).cloned().unwrap_or(row);
                let mut balance = Balance::from(row);
                if let Some(state) = states.get_mut(&balance.organization_id) {
                    decide::settle(state, at);
                    balance.held = state.held;
                    balance.available = state.available();
                }
                balance
            })
            .collect())
    }

    /// The soonest future expiry among the organization's active lots, with the unheld
    /// credits expiring then, as of now (nothing is written).
    pub async fn next_expiration(&self, organization_id: &str) -> Result<Option<(DateTime<Utc>, i64)>, LedgerError> {
        Ok(self.settled_state(organization_id).await?.next_expiration())
    }

    /// The organization's state as stored, settled up to now; nothing is written.
    async fn settled_state(&self, organization_id: &str) -> Result<decide::State, LedgerError> {
        let (rows, mut states) = self.snapshot(&[organization_id.to_owned()]).await?;
        if rows.is_empty() {
            return Err(LedgerError::OrganizationNotFound);
        }
        let mut state = states.remove(organization_id).unwrap_or_default();
        decide::settle(&mut state, self.now());
        Ok(state)
    }

    /// The balance rows of `organization_ids` and their states (open lots, active holds)
    /// read in one snapshot, for reads without the lock: read statement by statement, a
    /// sweeper or a capture committing in between (on another replica, say) could leave
    /// a row's `held` and the holds it counts disagreeing.
    pub(crate) async fn snapshot(
        &self,
        organization_ids: &[String],
    ) -> Result<(Vec<credit_balance::Model>, std::collections::HashMap<String, decide::State>), LedgerError> {
        // SQLite (WAL) keeps one snapshot from a transaction's first read on; PostgreSQL
        // needs REPEATABLE READ for that.
        let options = match self.db.get_database_backend() {
            DbBackend::Postgres => TransactionOptions {
                isolation_level: Some(sea_orm::IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadOnly),
                ..Default::default()
            },
            _ => TransactionOptions::default(),
        };
        let txn = self.db.begin_with_options(options).await?;
        let rows = credit_balance::Entity::find()
            .filter(credit_balance::Column::OrganizationId.is_in(organization_ids.iter().cloned()))
            .all(&txn)
            .await?;
        let states = write::load_states(&txn, &rows).await?;
        txn.commit().await?;
        Ok((rows, states))
    }

    /// Starts a ledger transaction: balance changes decided under the organizations'
    /// locks, written and announced when it commits (see [`LedgerTx`]).
    pub async fn begin(&self) -> Result<LedgerTx, LedgerError> {
        let mut tx = LedgerTx::begin(&self.db, &self.events, self.now()).await?;
        tx.act_for(self.auditor());
        Ok(tx)
    }

    /// Starts a transaction that will write ([`crate::db::begin_write`]), for the writes
    /// outside [`LedgerTx`] (an organization, a key, a session); they announce through
    /// the outbox.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, LedgerError> {
        Ok(crate::db::begin_write(&self.db).await?)
    }
}
