//! Group commit: concurrent changes share one database transaction.
//!
//! One committer task per process (on PostgreSQL, one per lane of organizations: see
//! [`POSTGRES_LANES`]) takes every change waiting when it is free, locks the
//! organizations they touch, decides them in arrival order against the state each
//! previous one left ([`crate::decide`], through [`LedgerTx`]), writes the results once
//! and commits once; then it answers each caller with its own result. While that commit
//! is in flight the next requests gather, so throughput on one organization grows with
//! the batch, not with commit latency. There is no waiting for company: a lone request
//! is committed at once.
//!
//! Between batches the committer keeps each organization's state as its last batch
//! committed it ([`KeptState`]), and the next batch uses it instead of reading the
//! organization's lots and holds again, but only when the balance row, read under its
//! lock, still shows the generation that state was written at: any other writer (another
//! replica, the sweeper, a refund) raises it under the same lock. So a batch costs the
//! same whether an organization has one open lot or hundreds. On a SQLite file the
//! committer writes through a connection of its own ([`crate::db::writer_for`]), whose
//! page cache stays warm from batch to batch and whose log another connection copies
//! into the database file beside it ([`crate::db::checkpoint_beside`]); on PostgreSQL
//! through connections of its own, one a lane, whose batches begin with `BEGIN` alone
//! and send their writes (all but holds) as one statement ([`crate::write::Writes`]):
//! four round trips a batch of consumes (begin, lock, write, commit) where there were
//! nine.
//!
//! The database stays the arbiter: each batch holds the row locks of its organizations
//! (replicas on one PostgreSQL take them in the same sorted order). Under those locks it
//! reads which of its idempotency keys are taken (by an earlier batch, another replica,
//! or the other kind of request) and answers those requests without applying them, as
//! it does a key used twice within the batch, so a reused key never reaches the unique
//! index. A batch that still fails as a whole (a lost connection, a deadlock that
//! outlasts its retries) is rolled back and its members are run again one by one, each
//! getting its own exact answer, so nothing is half-applied; [`Committer::fallbacks`]
//! counts those. While the availability probe finds the database away
//! ([`crate::db::Availability`]), queued requests are refused at once, and a batch waiting
//! for a connection stops waiting the moment the probe notices, so nothing queues behind
//! the pool's acquire timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub(crate) mod idempotency;
pub(crate) mod op;

use crate::db::Availability;
use crate::events::EventHub;
use crate::write::{KeptState, LedgerTx};
use crate::{Clock, LedgerError};
use idempotency::{Keys, retrying};
use op::{Done, Op};

/// What a caller gets back, or why not.
pub type Outcome = Result<Done, LedgerError>;

/// The most changes decided in one transaction (well within bind-parameter limits).
const MAX_BATCH: usize = 512;

/// The most organizations whose state the committer keeps between batches.
const MAX_KEPT: usize = 1_024;

/// States kept between batches, by organization. Only its lane's committer task
/// uses it; the mutex is never held across an `await`.
type Kept = Mutex<HashMap<String, KeptState>>;

struct Job {
    request: Op,
    reply: oneshot::Sender<Outcome>,
}

/// How many committer tasks a process runs on PostgreSQL, each owning the organizations
/// whose id hashes to it. Their batches lock disjoint organizations, so they commit side
/// by side: while one waits for its commit, the other decides. One organization's changes
/// still go through one task, in arrival order. SQLite has one writer, so one task there.
/// Two measured best with 1,000 organizations (`bench_throughput`, docs/performance.md):
/// 3,190–3,410 consumes/s with one, 3,730–4,060 with two, 3,290–3,740 with four, 2,870
/// with eight (smaller batches, more commits).
pub(crate) const POSTGRES_LANES: usize = 2;

/// The queues to this process's committer tasks (one per lane), started on first use.
#[derive(Clone, Debug, Default)]
pub struct Committer {
    lanes: Arc<OnceLock<Vec<mpsc::UnboundedSender<Job>>>>,
    /// The connection the committer writes through ([`crate::db::writer_for`]), made on
    /// first use.
    writer: Arc<tokio::sync::OnceCell<DatabaseConnection>>,
    /// Batches that failed as a whole and were committed again one by one.
    fallbacks: Arc<AtomicU64>,
    /// Whether the database is away: then queued requests are refused at once.
    availability: Availability,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("request", &self.request).finish_non_exhaustive()
    }
}

impl Committer {
    /// A committer that refuses its queue while `availability` says the database is away.
    pub fn new(availability: Availability) -> Self {
        Self { availability, ..Self::default() }
    }

    /// The connection the committer writes through, for other writes that should queue
    /// behind its batches in turn rather than meet them at SQLite's lock
    /// ([`crate::Ledger::bookkeeper`]).
    pub async fn writer(&self, db: &DatabaseConnection) -> DatabaseConnection {
        writer_of(&self.writer, db).await
    }

    /// Decides and commits `request` together with whatever else is waiting. Needs a
    /// Tokio runtime; the task ends when the last clone of this committer is dropped.
    pub async fn submit(&self, db: &DatabaseConnection, hub: &EventHub, clock: &Clock, request: Op) -> Outcome {
        let lanes = self.lanes.get_or_init(|| {
            let count = match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => POSTGRES_LANES,
                _ => 1,
            };
            (0..count)
                .map(|_| {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    let writer = self.writer.clone();
                    let shared = Shared {
                        hub: hub.clone(),
                        clock: clock.clone(),
                        availability: self.availability.clone(),
                        fallbacks: self.fallbacks.clone(),
                    };
                    tokio::spawn(run(db.clone(), writer, shared, receiver));
                    sender
                })
                .collect()
        });
        let queue = &lanes[lane(request.organization_id(), lanes.len())];
        let (reply, answer) = oneshot::channel();
        queue.send(Job { request, reply }).map_err(|_| LedgerError::internal("the committer has stopped"))?;
        // The request's wait for, and share of, the batch that commits it: a span of the
        // request's trace (the batch itself is `ledger.batch`, in the committer's task).
        let span = tracing::info_span!("ledger.commit", otel.kind = "internal");
        answer.instrument(span).await.map_err(|_| LedgerError::internal("the committer dropped a request"))?
    }

    /// How many batches failed as a whole and had their members committed again one by
    /// one since this committer started. Each costs a rolled-back transaction and a
    /// commit per member: something the batch should have foreseen (a taken key, say)
    /// or a database fault. Zero in steady running.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

/// The lane of an organization among `count`.
fn lane(organization_id: &str, count: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    organization_id.hash(&mut hasher);
    (hasher.finish() % count as u64) as usize
}

/// What a committer task shares with the process.
struct Shared {
    hub: EventHub,
    clock: Clock,
    availability: Availability,
    fallbacks: Arc<AtomicU64>,
}

async fn run(
    db: DatabaseConnection,
    writer: Arc<tokio::sync::OnceCell<DatabaseConnection>>,
    shared: Shared,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let db = writer_of(&writer, &db).await;
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let kept = Kept::default();
    while let Some(first) = queue.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if shared.availability.is_down() {
            // Refused at once, as the HTTP layer refuses new requests: trying would wait
            // for the pool's acquire timeout, batch after batch.
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(crate::db::unavailable()));
            }
            continue;
        }
        if !commit_batch(&db, &shared, &kept, &mut jobs).await {
            shared.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The committer's connection ([`crate::db::writer_for`]), made on first use, its log
/// copied beside it while the committer lives ([`crate::db::checkpoint_beside`]).
async fn writer_of(
    cell: &Arc<tokio::sync::OnceCell<DatabaseConnection>>,
    db: &DatabaseConnection,
) -> DatabaseConnection {
    cell.get_or_init(|| async {
        let writer = crate::db::writer_for(db).await;
        crate::db::checkpoint_beside(&writer, Arc::downgrade(cell));
        writer
    })
    .await
    .clone()
}

/// Commits `jobs` together, or else one by one; answers every one of them. Returns
/// whether they were committed together.
async fn commit_batch(db: &DatabaseConnection, shared: &Shared, kept: &Kept, jobs: &mut Vec<Job>) -> bool {
    let ops: Vec<&Op> = jobs.iter().map(|job| &job.request).collect();
    let started = std::time::Instant::now();
    let span = tracing::info_span!("ledger.batch", otel.kind = "internal", size = ops.len());
    let decided = retrying(|| decide_all(db, shared, kept, &ops)).instrument(span).await;
    crate::metrics::batch(ops.len(), started.elapsed());
    match decided {
        Ok(outcomes) => {
            for (job, outcome) in jobs.drain(..).zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
            true
        }
        Err(error) => {
            if jobs.len() > 1 {
                tracing::debug!(%error, size = jobs.len(), "batch failed; committing its members one by one");
            }
            for job in jobs.drain(..) {
                let outcome = if jobs_is_single_failure(&error) {
                    Err(clone_error(&error))
                } else {
                    let one = [&job.request];
                    retrying(|| decide_all(db, shared, kept, &one))
                        .await
                        .and_then(|mut outcomes| outcomes.pop().ok_or_else(|| LedgerError::internal("no outcome")))
                        .and_then(|outcome| outcome)
                };
                let _ = job.reply.send(outcome);
            }
            false
        }
    }
}

/// Whether a failed batch's error answers each member as it stands: the database is away
/// (running them one by one would only fail again, slower).
fn jobs_is_single_failure(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Unavailable(_))
}

fn clone_error(error: &LedgerError) -> LedgerError {
    match error {
        LedgerError::Unavailable(source) => LedgerError::Unavailable(sea_orm::DbErr::Custom(source.to_string())),
        other => LedgerError::internal(other.to_string()),
    }
}

/// Decides every operation in one transaction and commits it; per-operation refusals
/// are outcomes (they still write the expiries they settled), a database failure fails
/// the whole batch (nothing of it is written).
async fn decide_all(
    db: &DatabaseConnection,
    shared: &Shared,
    kept: &Kept,
    ops: &[&Op],
) -> Result<Vec<Outcome>, LedgerError> {
    let Shared { hub, clock, availability, .. } = shared;
    let connection = db.clone();
    let begun = availability.unless_down(async move { crate::db::begin_committing(&connection).await }).await?;
    let mut tx = LedgerTx::on(begun, hub, clock.now());
    // Taken out: a batch that fails drops them, and the next one reads afresh.
    tx.offer(take_kept(kept, ops));
    tx.lock(ops.iter().map(|op| op.organization_id())).await?;
    // Decided as of when the locks are held, not when the batch began waiting for them:
    // a hold a read has already shown expired is never captured or released by a batch
    // stamped before its deadline.
    tx.restamp(clock.now());
    // Every key the batch's requests carry that is taken, and by what (see
    // [`idempotency`]): in the database, read under the locks (so final for this batch),
    // and, as the batch goes, by the requests it applies.
    let mut keys = Keys::taken(&tx, ops).await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        if let Some(refusal) = keys.refusal(op) {
            outcomes.push(Err(refusal));
            continue;
        }
        match tx.apply(op).await {
            Ok(result) => {
                keys.take(op);
                outcomes.push(Ok(result));
            }
            Err(error @ (LedgerError::Unavailable(_) | LedgerError::Conflict(_) | LedgerError::Internal(_))) => {
                return Err(error);
            }
            Err(refusal) => outcomes.push(Err(refusal)),
        }
    }
    let states = tx.commit_keeping().await?;
    keep(kept, states);
    Ok(outcomes)
}

/// The kept states of the organizations `ops` touch, taken out of `kept`.
fn take_kept(kept: &Kept, ops: &[&Op]) -> Vec<(String, KeptState)> {
    let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    ops.iter().filter_map(|op| kept.remove_entry(op.organization_id())).collect()
}

/// Keeps committed states, forgetting others when there are too many.
fn keep(kept: &Kept, states: Vec<(String, KeptState)>) {
    let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (organization_id, state) in states {
        while kept.len() >= MAX_KEPT {
            let Some(any) = kept.keys().next().cloned() else { break };
            kept.remove(&any);
        }
        kept.insert(organization_id, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Amount, ChangeRequest, ConsumeRequest, GrantRequest, HoldRequest, Ledger, TransactionKind};

    fn consume(organization_id: &str, amount: i64, key: Option<&str>) -> Op {
        Op::Change(ChangeRequest {
            organization_id: organization_id.to_owned(),
            kind: TransactionKind::Consumption,
            delta: -amount,
            description: Some("use".into()),
            reference_type: None,
            reference_id: None,
            idempotency_key: key.map(str::to_owned),
            lot: None,
            by: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_batch_answers_keys_taken_before_it_or_inside_it_and_commits_as_a_whole() {
        let (_dir, url) = crate::db::migrated_sqlite().await;
        let db = crate::db::connect(&url).await.expect("connect");
        let ledger = Ledger::new(db.clone());
        let org = ledger.create_organization("Batch", None).await.expect("organization").id;
        let amount = |credits| Amount::parse(credits).expect("amount");
        let seed = GrantRequest::new(org.clone(), amount(100), "seed".into(), None).expect("grant");
        ledger.grant(seed).await.expect("granted");
        let before = ConsumeRequest::new(org.clone(), amount(5), "use".into(), None, None, Some("before".into()));
        ledger.consume(before.expect("consume")).await.expect("consumed");
        let decide = |ops: Vec<Op>| {
            let db = db.clone();
            async move {
                let ops: Vec<&Op> = ops.iter().collect();
                let shared = Shared {
                    hub: EventHub::default(),
                    clock: Clock::system(),
                    availability: Availability::default(),
                    fallbacks: Default::default(),
                };
                decide_all(&db, &shared, &Kept::default(), &ops).await
            }
        };
        let outcomes = decide(vec![
            // Committed before this batch: the caller's replay answers it.
            consume(&org, 5, Some("before")),
            consume(&org, 1, None),
            // Twice in this batch: the first is the original.
            consume(&org, 2, Some("inside")),
            consume(&org, 2, Some("inside")),
        ])
        .await
        .expect("the batch commits as a whole");
        assert!(matches!(outcomes[0], Err(LedgerError::DuplicateIdempotencyKey)), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[1], Ok(Done::Changed(..))), "{:?}", outcomes[1]);
        assert!(matches!(outcomes[2], Ok(Done::Changed(..))), "{:?}", outcomes[2]);
        assert!(matches!(outcomes[3], Err(LedgerError::DuplicateIdempotencyKey)), "{:?}", outcomes[3]);
        // A consume's key is the other kind's conflict, and still its own kind's replay.
        let hold = HoldRequest::new(org.clone(), amount(1), "use".into(), None, None, Some("before".into()), None);
        let outcomes = decide(vec![Op::CreateHold(hold.expect("hold")), consume(&org, 5, Some("before"))])
            .await
            .expect("the batch commits as a whole");
        assert!(matches!(outcomes[0], Err(LedgerError::IdempotencyConflict)), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[1], Err(LedgerError::DuplicateIdempotencyKey)), "{:?}", outcomes[1]);
        assert_eq!(ledger.balance(&org).await.expect("balance").balance, 100 - 5 - 1 - 2);
    }
}
