//! Lots and holds against a model: random sequences of grants (with expiry, priority and
//! category), purchases, consumes, holds, captures, releases, voids, refunds and clock
//! advances, applied to the ledger (with a clock the test moves) and to a few lines of
//! plain code. After every step the balance, `available`, `held`, every lot, every hold,
//! every transaction and every allocation must agree, and balance = sum of transactions.

use chrono::{DateTime, Duration, Utc};
use credits::ledger::{
    Amount, CaptureRequest, ChangeRequest, Clock, ConsumeRequest, GrantRequest, HoldRequest, Ledger, LedgerError,
    LotFilter, TransactionKind,
};
use credits::ledger::{HoldStatus, LotCategory, LotSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::helpers::{Engine, database};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LotState {
    Active,
    Depleted,
    Expired,
    Voided,
}

#[derive(Clone, Debug)]
struct ModelLot {
    id: String,
    paid: bool,
    priority: i32,
    /// Seconds on the test clock.
    expires: Option<i64>,
    seq: i64,
    original: i64,
    remaining: i64,
    held: i64,
    state: LotState,
    /// The purchase that formed it.
    purchase: Option<usize>,
}

impl ModelLot {
    fn unheld(&self) -> i64 {
        if self.state == LotState::Active { self.remaining - self.held } else { 0 }
    }
}

#[derive(Clone, Debug)]
struct ModelHold {
    id: String,
    amount: i64,
    expires: i64,
    /// (lot index or overdraft, credits)
    parts: Vec<(Option<usize>, i64)>,
    status: HoldStatus,
    captured: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelTx {
    kind: TransactionKind,
    amount: i64,
    at: i64,
    allocations: Vec<(Option<usize>, i64)>,
    hold: Option<usize>,
}

/// Lots, holds and the books, as plainly as they can be written.
#[derive(Clone, Debug, Default)]
struct Model {
    balance: i64,
    limit: i64,
    lots: Vec<ModelLot>,
    holds: Vec<ModelHold>,
    txs: Vec<ModelTx>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Replayed,
    Insufficient,
    NotActive(HoldStatus),
    /// A release of an ended hold: returned as it was.
    Unchanged(HoldStatus),
    /// A refund or void: what it took.
    Took(i64),
}

impl Model {
    fn held(&self) -> i64 {
        self.holds.iter().filter(|hold| hold.status == HoldStatus::Active).map(|hold| hold.amount).sum()
    }

    fn spendable(&self) -> i64 {
        self.balance - self.held() + self.limit
    }

    fn record(&mut self, kind: TransactionKind, amount: i64, at: i64, allocations: Vec<(Option<usize>, i64)>) {
        self.balance += amount;
        self.txs.push(ModelTx { kind, amount, at, allocations, hold: None });
    }

    /// Expiries and hold deadlines up to `at`, in time order (a lot before a hold at the
    /// same instant).
    fn settle(&mut self, at: i64) {
        loop {
            let lot = (0..self.lots.len())
                .filter(|&i| self.lots[i].state == LotState::Active)
                .filter_map(|i| Some((self.lots[i].expires?, self.lots[i].seq, i)))
                .filter(|(expires, ..)| *expires <= at)
                .min();
            let hold = (0..self.holds.len())
                .filter(|&h| self.holds[h].status == HoldStatus::Active && self.holds[h].expires <= at)
                .map(|h| (self.holds[h].expires, h))
                .min();
            match (lot, hold) {
                (Some((when, _, i)), hold) if hold.is_none_or(|(hold_at, _)| when <= hold_at) => {
                    let lot = &mut self.lots[i];
                    let unheld = lot.remaining - lot.held;
                    lot.state = LotState::Expired;
                    lot.remaining -= unheld;
                    if unheld > 0 {
                        self.record(TransactionKind::Expiry, -unheld, when, vec![(Some(i), -unheld)]);
                    }
                }
                (_, Some((when, h))) => self.end_hold(h, when, HoldStatus::Expired),
                _ => return,
            }
        }
    }

    fn end_hold(&mut self, h: usize, at: i64, status: HoldStatus) {
        self.holds[h].status = status;
        let parts = self.holds[h].parts.clone();
        self.give_back(&parts, at);
    }

    /// Reserved credits back to their lots; those of an ended lot leave.
    fn give_back(&mut self, parts: &[(Option<usize>, i64)], at: i64) {
        for &(lot, amount) in parts {
            let Some(i) = lot else { continue };
            self.lots[i].held -= amount;
            let kind = match self.lots[i].state {
                LotState::Expired => TransactionKind::Expiry,
                LotState::Voided => TransactionKind::Void,
                LotState::Active | LotState::Depleted => continue,
            };
            self.lots[i].remaining -= amount;
            self.record(kind, -amount, at, vec![(Some(i), -amount)]);
        }
    }

    /// Lots in draw order, then the overdraft.
    fn plan(&self, amount: i64, only: Option<&[usize]>) -> Vec<(Option<usize>, i64)> {
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|&i| self.lots[i].unheld() > 0 && only.is_none_or(|only| only.contains(&i)))
            .collect();
        order.sort_by_key(|&i| {
            let lot = &self.lots[i];
            (lot.priority, lot.expires.is_none(), lot.expires, lot.paid, lot.seq)
        });
        let mut left = amount;
        let mut plan = Vec::new();
        for i in order {
            if left == 0 {
                break;
            }
            let take = left.min(self.lots[i].unheld());
            plan.push((Some(i), take));
            left -= take;
        }
        if left > 0 {
            plan.push((None, left));
        }
        plan
    }

    fn take(&mut self, plan: &[(Option<usize>, i64)]) -> Vec<(Option<usize>, i64)> {
        for &(lot, amount) in plan {
            if let Some(i) = lot {
                self.lots[i].remaining -= amount;
                if self.lots[i].remaining == 0 && self.lots[i].state == LotState::Active {
                    self.lots[i].state = LotState::Depleted;
                }
            }
        }
        plan.iter().map(|&(lot, amount)| (lot, -amount)).collect()
    }

    fn consume(&mut self, amount: i64, at: i64) -> Outcome {
        self.settle(at);
        if amount > self.spendable() {
            return Outcome::Insufficient;
        }
        let plan = self.plan(amount, None);
        let allocations = self.take(&plan);
        self.record(TransactionKind::Consumption, -amount, at, allocations);
        Outcome::Done
    }

    fn credit(&mut self, kind: TransactionKind, lot: ModelLot, at: i64) {
        self.settle(at);
        let debt = self.lots.iter().map(|lot| lot.remaining).sum::<i64>() - self.balance;
        let settled = debt.min(lot.original);
        let index = self.lots.len();
        let mut allocations = Vec::new();
        if settled > 0 {
            allocations.push((None, settled));
        }
        if lot.original > settled {
            allocations.push((Some(index), lot.original - settled));
        }
        let seq = self.txs.len() as i64 + 1;
        let original = lot.original;
        self.lots.push(ModelLot {
            seq,
            remaining: original - settled,
            state: if original > settled { LotState::Active } else { LotState::Depleted },
            ..lot
        });
        self.record(kind, original, at, allocations);
    }

    fn hold(&mut self, amount: i64, ttl: i64, at: i64, id: Option<String>) -> Outcome {
        self.settle(at);
        if amount > self.spendable() {
            return Outcome::Insufficient;
        }
        let parts = self.plan(amount, None);
        for &(lot, part) in &parts {
            if let Some(i) = lot {
                self.lots[i].held += part;
            }
        }
        let id = id.unwrap_or_default();
        self.holds.push(ModelHold { id, amount, expires: at + ttl, parts, status: HoldStatus::Active, captured: None });
        Outcome::Done
    }

    fn capture(&mut self, h: usize, amount: Option<i64>, at: i64) -> Outcome {
        self.settle(at);
        let hold = self.holds[h].clone();
        let amount = amount.unwrap_or(hold.amount);
        if hold.status != HoldStatus::Active {
            return if hold.status == HoldStatus::Captured && hold.captured == Some(amount) {
                Outcome::Replayed
            } else {
                Outcome::NotActive(hold.status)
            };
        }
        let excess = amount - hold.amount;
        if excess > 0 && excess > self.spendable() {
            return Outcome::Insufficient;
        }
        self.holds[h].status = HoldStatus::Captured;
        self.holds[h].captured = Some(amount);
        let (mut left, mut taken, mut released) = (amount, Vec::new(), Vec::new());
        for &(lot, part) in &hold.parts {
            let take = left.min(part);
            left -= take;
            if take > 0 {
                taken.push((lot, take));
            }
            if part > take {
                released.push((lot, part - take));
            }
        }
        for &(lot, take) in &taken {
            if let Some(i) = lot {
                self.lots[i].held -= take;
            }
        }
        let mut allocations = self.take(&taken);
        if left > 0 {
            let plan = self.plan(left, None);
            allocations.extend(self.take(&plan));
        }
        let mut merged: Vec<(Option<usize>, i64)> = Vec::new();
        for (lot, amount) in allocations {
            match merged.iter_mut().find(|(seen, _)| *seen == lot) {
                Some((_, sum)) => *sum += amount,
                None => merged.push((lot, amount)),
            }
        }
        self.record(TransactionKind::Consumption, -amount, at, merged);
        if let Some(last) = self.txs.last_mut() {
            last.hold = Some(h);
        }
        self.give_back(&released, at);
        Outcome::Done
    }

    fn release(&mut self, h: usize, at: i64) -> Outcome {
        self.settle(at);
        match self.holds[h].status {
            HoldStatus::Active => {
                self.end_hold(h, at, HoldStatus::Released);
                Outcome::Done
            }
            HoldStatus::Captured => Outcome::NotActive(HoldStatus::Captured),
            other => Outcome::Unchanged(other),
        }
    }

    fn void(&mut self, i: usize, at: i64) -> Outcome {
        self.settle(at);
        if matches!(self.lots[i].state, LotState::Voided | LotState::Expired) {
            return Outcome::Took(0);
        }
        let unheld = self.lots[i].unheld();
        self.lots[i].state = LotState::Voided;
        self.lots[i].remaining -= unheld;
        if unheld > 0 {
            self.record(TransactionKind::Void, -unheld, at, vec![(Some(i), -unheld)]);
        }
        Outcome::Took(unheld)
    }

    fn refund(&mut self, purchase: usize, wanted: i64, at: i64) -> Outcome {
        self.settle(at);
        let own: Vec<usize> = (0..self.lots.len()).filter(|&i| self.lots[i].purchase == Some(purchase)).collect();
        let room: i64 = own.iter().map(|&i| self.lots[i].unheld()).sum();
        let taken = wanted.min(room).min(self.balance.max(0));
        if taken == 0 {
            return Outcome::Took(0);
        }
        let plan = self.plan(taken, Some(&own));
        let allocations = self.take(&plan);
        self.record(TransactionKind::Refund, -taken, at, allocations);
        Outcome::Took(taken)
    }
}

#[derive(Clone, Debug)]
enum Step {
    Grant { amount: i64, paid: bool, priority: i32, expires_in: Option<i64> },
    Purchase { amount: i64 },
    Consume { amount: i64 },
    Hold { amount: i64, ttl: i64 },
    Capture { hold: usize, amount: Option<i64> },
    Release { hold: usize },
    Void { lot: usize },
    Refund { purchase: usize, amount: i64 },
    Advance { seconds: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    let priority = prop_oneof![Just(10), Just(50), Just(90)];
    prop_oneof![
        3 => (1i64..=40, any::<bool>(), priority, prop::option::of(1i64..=6))
            .prop_map(|(amount, paid, priority, expires_in)| Step::Grant { amount, paid, priority, expires_in }),
        1 => (1i64..=40).prop_map(|amount| Step::Purchase { amount }),
        3 => (1i64..=40).prop_map(|amount| Step::Consume { amount }),
        3 => (1i64..=40, 1i64..=5).prop_map(|(amount, ttl)| Step::Hold { amount, ttl }),
        2 => (any::<usize>(), prop::option::of(1i64..=50)).prop_map(|(hold, amount)| Step::Capture { hold, amount }),
        1 => any::<usize>().prop_map(|hold| Step::Release { hold }),
        1 => any::<usize>().prop_map(|lot| Step::Void { lot }),
        1 => (any::<usize>(), 1i64..=40).prop_map(|(purchase, amount)| Step::Refund { purchase, amount }),
        2 => (1i64..=3).prop_map(|seconds| Step::Advance { seconds }),
    ]
}

/// The ledger under test, on a clock at `BASE + seconds`.
struct Subject {
    ledger: Ledger,
    seconds: Arc<AtomicI64>,
    base: DateTime<Utc>,
}

impl Subject {
    fn seconds_of(&self, at: DateTime<Utc>) -> i64 {
        (at - self.base).num_seconds()
    }
}

fn fail(step: &Step, error: LedgerError) -> TestCaseError {
    TestCaseError::fail(format!("{step:?}: unexpected {error:?}"))
}

/// Applies `step` to the ledger; returns its outcome.
async fn apply(
    subject: &Subject,
    org: &str,
    model: &Model,
    purchases: &mut usize,
    step: &Step,
) -> Result<(Outcome, Option<String>), TestCaseError> {
    let ledger = &subject.ledger;
    let now = ledger.now();
    let amount = |value: i64| Amount::parse(value).expect("a valid amount");
    Ok(match step {
        Step::Grant { amount: credits, paid, priority, expires_in } => {
            let category = if *paid { LotCategory::Paid } else { LotCategory::Promotional };
            let request = GrantRequest::new(org.to_owned(), amount(*credits), "gift".into(), None)
                .expect("grant")
                .with_lot(Some(category), Some(*priority), expires_in.map(|s| now + Duration::seconds(s)), now)
                .expect("lot");
            let applied = ledger.grant(request).await.map_err(|e| fail(step, e))?;
            (Outcome::Done, applied.lot)
        }
        Step::Purchase { amount: credits } => {
            let mut tx = ledger.begin().await.map_err(|e| fail(step, e))?;
            let request = ChangeRequest {
                organization_id: org.to_owned(),
                kind: TransactionKind::Purchase,
                delta: *credits,
                description: Some("buy".into()),
                reference_type: Some("purchase".into()),
                reference_id: Some(format!("p{purchases}")),
                idempotency_key: None,
                lot: Some(LotSpec { category: LotCategory::Paid, priority: 50, expires_at: None }),
                by: Default::default(),
            };
            let (_, _, lot) = tx.change(&request).await.map_err(|e| fail(step, e))?;
            tx.commit().await.map_err(|e| fail(step, e))?;
            *purchases += 1;
            (Outcome::Done, lot)
        }
        Step::Consume { amount: credits } => {
            let request = ConsumeRequest::new(org.to_owned(), amount(*credits), "use".into(), None, None, None);
            match ledger.consume(request.expect("consume")).await {
                Ok(_) => (Outcome::Done, None),
                Err(LedgerError::InsufficientCredits { .. }) => (Outcome::Insufficient, None),
                Err(error) => return Err(fail(step, error)),
            }
        }
        Step::Hold { amount: credits, ttl } => {
            let request =
                HoldRequest::new(org.to_owned(), amount(*credits), "job".into(), None, None, None, Some(*ttl));
            match ledger.create_hold(request.expect("hold")).await {
                Ok(created) => (Outcome::Done, Some(created.hold.id)),
                Err(LedgerError::InsufficientCredits { .. }) => (Outcome::Insufficient, None),
                Err(error) => return Err(fail(step, error)),
            }
        }
        Step::Capture { hold, amount: credits } => {
            let id = model.holds[*hold].id.clone();
            let request = CaptureRequest::new(org.to_owned(), id, credits.map(amount), None).expect("capture");
            match ledger.capture_hold(request).await {
                Ok(captured) if captured.replayed => (Outcome::Replayed, None),
                Ok(_) => (Outcome::Done, None),
                Err(LedgerError::InsufficientCredits { .. }) => (Outcome::Insufficient, None),
                Err(LedgerError::HoldNotActive { status }) => {
                    (Outcome::NotActive(HoldStatus::parse(status).expect("status")), None)
                }
                Err(error) => return Err(fail(step, error)),
            }
        }
        Step::Release { hold } => match ledger.release_hold(org, &model.holds[*hold].id).await {
            Ok(released) if model.holds[*hold].status == HoldStatus::Active => {
                // Active in the model before settling: released now, or expired meanwhile.
                match released.status {
                    HoldStatus::Released => (Outcome::Done, None),
                    other => (Outcome::Unchanged(other), None),
                }
            }
            Ok(released) => (Outcome::Unchanged(released.status), None),
            Err(LedgerError::HoldNotActive { status }) => {
                (Outcome::NotActive(HoldStatus::parse(status).expect("status")), None)
            }
            Err(error) => return Err(fail(step, error)),
        },
        Step::Void { lot } => {
            let (_, transaction, _) =
                ledger.void_lot(&model.lots[*lot].id, "mistake").await.map_err(|e| fail(step, e))?;
            (Outcome::Took(transaction.map_or(0, |transaction| -transaction.amount)), None)
        }
        Step::Refund { purchase, amount: wanted } => {
            let mut tx = ledger.begin().await.map_err(|e| fail(step, e))?;
            let reference = format!("p{purchase}");
            let clawback =
                tx.clawback(org, *wanted, "refund", ("purchase", &reference)).await.map_err(|e| fail(step, e))?;
            tx.commit().await.map_err(|e| fail(step, e))?;
            (Outcome::Took(clawback.taken), None)
        }
        Step::Advance { seconds } => {
            subject.seconds.fetch_add(*seconds, Ordering::SeqCst);
            (Outcome::Done, None)
        }
    })
}

/// The same step on the model.
fn expect(model: &mut Model, step: &Step, at: i64, purchases: usize) -> Outcome {
    match step {
        Step::Grant { amount, paid, priority, expires_in } => {
            let lot = lot(*amount, *paid, *priority, expires_in.map(|s| at + s), None);
            model.credit(TransactionKind::Grant, lot, at);
            Outcome::Done
        }
        Step::Purchase { amount } => {
            let lot = lot(*amount, true, 50, None, Some(purchases));
            model.credit(TransactionKind::Purchase, lot, at);
            Outcome::Done
        }
        Step::Consume { amount } => model.consume(*amount, at),
        Step::Hold { amount, ttl } => model.hold(*amount, *ttl, at, None),
        Step::Capture { hold, amount } => model.capture(*hold, *amount, at),
        Step::Release { hold } => model.release(*hold, at),
        Step::Void { lot } => model.void(*lot, at),
        Step::Refund { purchase, amount } => model.refund(*purchase, *amount, at),
        Step::Advance { .. } => Outcome::Done,
    }
}

fn lot(amount: i64, paid: bool, priority: i32, expires: Option<i64>, purchase: Option<usize>) -> ModelLot {
    ModelLot {
        id: String::new(),
        paid,
        priority,
        expires,
        seq: 0,
        original: amount,
        remaining: amount,
        held: 0,
        state: LotState::Active,
        purchase,
    }
}

/// Picks indexes modulo what exists; `None` when the step has nothing to act on.
fn resolve(step: &Step, model: &Model, purchases: usize) -> Option<Step> {
    let pick = |index: usize, len: usize| (len > 0).then(|| index % len);
    Some(match step {
        Step::Capture { hold, amount } => Step::Capture { hold: pick(*hold, model.holds.len())?, amount: *amount },
        Step::Release { hold } => Step::Release { hold: pick(*hold, model.holds.len())? },
        Step::Void { lot } => Step::Void { lot: pick(*lot, model.lots.len())? },
        Step::Refund { purchase, amount } => Step::Refund { purchase: pick(*purchase, purchases)?, amount: *amount },
        other => other.clone(),
    })
}

/// Balance, held, available, lots and holds as the ledger reads them now.
async fn compare_reads(subject: &Subject, org: &str, model: &Model, after: &Step) -> Result<(), TestCaseError> {
    let ledger = &subject.ledger;
    let balance = ledger.balance(org).await.expect("balance");
    // `balance` is the sum of what is written: an expiry not yet written is missing from
    // it (compared after the sweep), never from `available`.
    prop_assert!(balance.balance >= model.balance, "balance after {:?}", after);
    prop_assert_eq!(balance.held, model.held(), "held after {:?}", after);
    prop_assert_eq!(balance.available, model.balance - model.held(), "available after {:?}", after);
    let (lots, _) = ledger.lots(org, &LotFilter::default(), 100, None).await.expect("lots");
    prop_assert_eq!(lots.len(), model.lots.len());
    for expected in &model.lots {
        let lot = lots.iter().find(|lot| lot.id == expected.id).expect("every lot is listed");
        let state = match lot.status {
            credits::ledger::LotStatus::Active => LotState::Active,
            credits::ledger::LotStatus::Depleted => LotState::Depleted,
            credits::ledger::LotStatus::Expired => LotState::Expired,
            credits::ledger::LotStatus::Voided => LotState::Voided,
        };
        prop_assert_eq!(
            (lot.remaining, lot.held, state, lot.original),
            (expected.remaining, expected.held, expected.state, expected.original),
            "lot {} after {:?}",
            expected.id,
            after
        );
    }
    for expected in &model.holds {
        let hold = ledger.hold(&expected.id).await.expect("hold").expect("the hold exists");
        prop_assert_eq!((hold.status, hold.captured), (expected.status, expected.captured), "hold after {:?}", after);
        let parts: Vec<(Option<String>, i64)> =
            expected.parts.iter().map(|(lot, amount)| (lot.map(|i| model.lots[i].id.clone()), *amount)).collect();
        let stored: Vec<(Option<String>, i64)> =
            hold.allocations.iter().map(|part| (part.lot_id.clone(), part.amount)).collect();
        prop_assert_eq!(stored, parts, "hold allocations");
    }
    Ok(())
}

/// Every transaction, in order, with its allocations; running balances; the sum.
async fn compare_books(subject: &Subject, org: &str, model: &Model) -> Result<(), TestCaseError> {
    use entity::credit_transaction;
    let ledger = &subject.ledger;
    let rows = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::OrganizationId.eq(org))
        .order_by_asc(credit_transaction::Column::Seq)
        .all(ledger.db())
        .await
        .expect("read transactions");
    let allocations: std::collections::HashMap<String, Vec<credits::ledger::Allocation>> = rows
        .iter()
        .map(|row| {
            let transaction =
                credits::ledger::CreditTransaction::try_from(row.clone()).expect("a readable transaction");
            (row.id.clone(), transaction.allocations)
        })
        .collect();
    let lot_index = |id: &Option<String>| id.as_ref().map(|id| model.lots.iter().position(|lot| &lot.id == id));
    let mut running = 0;
    let mut seen = Vec::new();
    for row in &rows {
        running += row.amount;
        prop_assert_eq!(row.balance_after, running, "balance_after of {}", row.id);
        prop_assert!(running >= -model.limit, "below the overdraft floor at {}", row.id);
        let parts: Vec<(Option<usize>, i64)> = allocations
            .get(&row.id)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|part| (lot_index(&part.lot_id).map(|index| index.expect("a known lot")), part.amount))
            .collect();
        prop_assert_eq!(parts.iter().map(|(_, amount)| amount).sum::<i64>(), row.amount, "allocations sum");
        let hold = row.hold_id.as_ref().map(|id| model.holds.iter().position(|hold| &hold.id == id).expect("a hold"));
        seen.push(ModelTx {
            kind: credits::ledger::CreditTransaction::try_from(row.clone()).expect("a transaction").kind,
            amount: row.amount,
            at: subject.seconds_of(row.created_at),
            allocations: parts,
            hold,
        });
    }
    prop_assert_eq!(&seen, &model.txs, "the transactions and their allocations");
    prop_assert_eq!(ledger.balance(org).await.expect("balance").balance, running, "balance = sum of transactions");
    Ok(())
}

async fn run_steps(subject: &Subject, limit: i64, steps: &[Step]) -> Result<(), TestCaseError> {
    let ledger = &subject.ledger;
    let org = ledger.create_organization("Lots property", None).await.expect("organization").id;
    ledger.set_overdraft_limit(&org, limit).await.expect("overdraft limit");
    let mut model = Model { limit, ..Model::default() };
    let mut purchases = 0usize;
    for step in steps {
        let Some(step) = resolve(step, &model, purchases) else { continue };
        let at = subject.seconds.load(Ordering::SeqCst);
        let (outcome, id) = apply(subject, &org, &model, &mut purchases, &step).await?;
        let expected = match &step {
            Step::Purchase { .. } => expect(&mut model, &step, at, purchases - 1),
            _ => expect(&mut model, &step, at, purchases),
        };
        prop_assert_eq!(outcome, expected, "{:?} at {}s; model {:?}", step, at, model);
        match (&step, id) {
            (Step::Grant { .. } | Step::Purchase { .. }, Some(id)) => {
                if let Some(lot) = model.lots.last_mut() {
                    lot.id = id;
                }
            }
            (Step::Hold { .. }, Some(id)) => {
                if let Some(hold) = model.holds.last_mut() {
                    hold.id = id;
                }
            }
            _ => {}
        }
        // Reads settle as of now, written or not; then a sweep writes what is due.
        let now = subject.seconds.load(Ordering::SeqCst);
        model.settle(now);
        compare_reads(subject, &org, &model, &step).await?;
        ledger.sweep().await.expect("sweep");
        compare_books(subject, &org, &model).await?;
    }
    Ok(())
}

async fn subject(url: &str) -> Subject {
    let db = credits::db::connect(url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    let seconds = Arc::new(AtomicI64::new(0));
    let base = DateTime::from_timestamp(2_000_000_000, 0).expect("base");
    let read = seconds.clone();
    let clock = Clock::from_fn(move || base + Duration::seconds(read.load(Ordering::SeqCst)));
    Subject { ledger: Ledger::new(db).with_clock(clock), seconds, base }
}

fn run_on(engine: Engine, cases: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let Some((subject, _database)) = runtime.block_on(async {
        let database = database(engine).await?;
        Some((subject(&database.url).await, database))
    }) else {
        return;
    };
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let strategy = (prop_oneof![Just(0i64), Just(20i64)], prop::collection::vec(step(), 1..=40));
    let result = runner.run(&strategy, |(limit, steps)| {
        // Each case starts at a fresh instant, after everything the last case left.
        subject.seconds.fetch_add(1_000, Ordering::SeqCst);
        runtime.block_on(run_steps(&subject, limit, &steps))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn lots_and_holds_behave_like_their_model_on_sqlite() {
    run_on(Engine::Sqlite, 96);
}

#[test]
fn lots_and_holds_behave_like_their_model_on_postgres() {
    run_on(Engine::Postgres, 32);
}
