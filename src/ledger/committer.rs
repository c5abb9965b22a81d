//! Group commit: concurrent changes share one database transaction.
//!
//! One committer task per process takes every change waiting when it is free, locks the
//! organizations they touch, decides them in arrival order against the state each
//! previous one left ([`super::decide`], through [`LedgerTx`]), writes the results once
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
//! page cache stays warm from batch to batch.
//!
//! The database stays the arbiter: each batch holds the row locks of its organizations
//! (replicas on one PostgreSQL take them in the same sorted order), and a batch that
//! fails as a whole (a key taken by another replica, a lost connection, a deadlock) is
//! rolled back and its members are run again one by one, each getting its own exact
//! answer, so nothing is half-applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::events::EventHub;
use super::ops::{Done, Op};
use super::tx::{KeptState, LedgerTx};
use super::{Clock, LedgerError, retrying};

/// What a caller gets back, or why not.
pub type Outcome = Result<Done, LedgerError>;

/// The most changes decided in one transaction (well within bind-parameter limits).
const MAX_BATCH: usize = 512;

/// The most organizations whose state the committer keeps between batches.
const MAX_KEPT: usize = 1_024;

/// States kept between batches, by organization. Only this process's committer task
/// uses it; the mutex is never held across an `await`.
type Kept = Mutex<HashMap<String, KeptState>>;

struct Job {
    request: Op,
    reply: oneshot::Sender<Outcome>,
}

/// The queue to this process's committer task, started on first use.
#[derive(Clone, Debug, Default)]
pub struct Committer {
    queue: Arc<OnceLock<mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("request", &self.request).finish_non_exhaustive()
    }
}

impl Committer {
    /// Decides and commits `request` together with whatever else is waiting. Needs a
    /// Tokio runtime; the task ends when the last clone of this committer is dropped.
    pub async fn submit(&self, db: &DatabaseConnection, hub: &EventHub, clock: &Clock, request: Op) -> Outcome {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run(db.clone(), hub.clone(), clock.clone(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        queue.send(Job { request, reply }).map_err(|_| LedgerError::internal("the committer has stopped"))?;
        answer.await.map_err(|_| LedgerError::internal("the committer dropped a request"))?
    }
}

async fn run(db: DatabaseConnection, hub: EventHub, clock: Clock, mut queue: mpsc::UnboundedReceiver<Job>) {
    let db = crate::db::writer_for(&db).await;
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
        commit_batch(&db, &hub, &clock, &kept, &mut jobs).await;
    }
}

/// Commits `jobs` together, or else one by one; answers every one of them.
async fn commit_batch(db: &DatabaseConnection, hub: &EventHub, clock: &Clock, kept: &Kept, jobs: &mut Vec<Job>) {
    let ops: Vec<&Op> = jobs.iter().map(|job| &job.request).collect();
    let decided = retrying(|| decide_all(db, hub, clock, kept, &ops)).await;
    match decided {
        Ok(outcomes) => {
            for (job, outcome) in jobs.drain(..).zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
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
                    retrying(|| decide_all(db, hub, clock, kept, &one))
                        .await
                        .and_then(|mut outcomes| outcomes.pop().ok_or_else(|| LedgerError::internal("no outcome")))
                        .and_then(|outcome| outcome)
                };
                let _ = job.reply.send(outcome);
            }
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
    hub: &EventHub,
    clock: &Clock,
    kept: &Kept,
    ops: &[&Op],
) -> Result<Vec<Outcome>, LedgerError> {
    let mut tx = LedgerTx::begin(db, hub, clock.now()).await?;
    // Taken out: a batch that fails drops them, and the next one reads afresh.
    tx.offer(take_kept(kept, ops));
    tx.lock(ops.iter().map(|op| op.organization_id())).await?;
    // Decided as of when the locks are held, not when the batch began waiting for them:
    // a hold a read has already shown expired is never captured or released by a batch
    // stamped before its deadline.
    tx.restamp(clock.now());
    let taken = tx.keys_taken_by_other_kinds(ops).await?;
    // Keys applied in this batch, and whether by a hold.
    let mut keys: HashMap<(&str, &str), bool> = HashMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        let is_hold = matches!(op, Op::CreateHold(_));
        let key = op.idempotency_key().map(|key| (op.organization_id(), key));
        if let Some(key) = key {
            if taken.contains(&(key.0.to_owned(), key.1.to_owned())) {
                outcomes.push(Err(LedgerError::IdempotencyConflict));
                continue;
            }
            // Two requests with one key in one batch: the first is the original, the
            // second learns so after the commit (the caller answers it as a replay or
            // a conflict). A refused request is not remembered, so only a key that was
            // applied counts.
            if let Some(&by_hold) = keys.get(&key) {
                let error = if by_hold == is_hold {
                    LedgerError::DuplicateIdempotencyKey
                } else {
                    LedgerError::IdempotencyConflict
                };
                outcomes.push(Err(error));
                continue;
            }
        }
        match tx.apply(op).await {
            Ok(result) => {
                if let Some(key) = key {
                    keys.insert(key, is_hold);
                }
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
