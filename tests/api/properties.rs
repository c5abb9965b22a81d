//! The ledger against a model: random sequences of consumes, grants and replays (keys
//! reused, same or different amounts, several consumes at once) must give the outcomes
//! and balances a simple in-memory model predicts, and the books must always balance.

use std::collections::{HashMap, HashSet};

use credits::ledger::{Amount, ConsumeRequest, GrantRequest, Ledger, LedgerError};
use futures::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::helpers::{Engine, database, permutations};

/// Idempotency keys come from a small pool, so that they are reused often.
const KEYS: u8 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Consume,
    Grant,
}

/// One request, as both the ledger and the model receive it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    kind: Kind,
    amount: i64,
    key: Option<String>,
}

#[derive(Clone, Debug)]
enum Step {
    One(Request),
    /// The same request as an earlier keyed one (this number modulo how many): a retry.
    Retry(usize),
    /// Several consumes sent at once.
    Burst(Vec<Request>),
}

/// What a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Applied,
    Insufficient,
    Replayed,
    Conflict,
}

/// The ledger as a few lines of obviously right code.
#[derive(Clone, Debug, Default)]
struct Model {
    balance: i64,
    transactions: usize,
    /// What each remembered key was used for: only requests that changed the balance.
    keys: HashMap<String, (Kind, i64)>,
}

impl Model {
    fn apply(&mut self, request: &Request) -> Outcome {
        if let Some(key) = &request.key
            && let Some(&(kind, amount)) = self.keys.get(key)
        {
            return if (kind, amount) == (request.kind, request.amount) {
                Outcome::Replayed
            } else {
                Outcome::Conflict
            };
        }
        let delta = match request.kind {
            Kind::Consume if request.amount > self.balance => return Outcome::Insufficient,
            Kind::Consume => -request.amount,
            Kind::Grant => request.amount,
        };
        self.balance += delta;
        self.transactions += 1;
        if let Some(key) = &request.key {
            self.keys.insert(key.clone(), (request.kind, request.amount));
        }
        Outcome::Applied
    }

    /// Every outcome vector (by request position) some serial order of `requests` gives,
    /// with the model after that order.
    fn possible(&self, requests: &[Request]) -> Vec<(Vec<Outcome>, Model)> {
        permutations(requests.len())
            .into_iter()
            .map(|order| {
                let mut model = self.clone();
                let mut outcomes = vec![Outcome::Applied; requests.len()];
                for i in order {
                    outcomes[i] = model.apply(&requests[i]);
                }
                (outcomes, model)
            })
            .collect()
    }
}

/// Sends `request` to the ledger; returns its outcome and the transaction id and
/// balance it answered with.
async fn send(
    ledger: &Ledger,
    org: &str,
    request: &Request,
) -> Result<(Outcome, Option<(String, i64)>), TestCaseError> {
    let amount = Amount::parse(request.amount).expect("a valid amount");
    let result = match request.kind {
        Kind::Consume => {
            let consume = ConsumeRequest::new(org.to_owned(), amount, "use".into(), None, None, request.key.clone());
            ledger.consume(consume.expect("a valid consume")).await
        }
        Kind::Grant => {
            let grant = GrantRequest::new(org.to_owned(), amount, "gift".into(), request.key.clone());
            ledger.grant(grant.expect("a valid grant")).await
        }
    };
    Ok(match result {
        Ok(applied) => {
            let outcome = if applied.replayed { Outcome::Replayed } else { Outcome::Applied };
            (outcome, Some((applied.transaction.id, applied.balance.balance)))
        }
        Err(LedgerError::InsufficientCredits { .. }) => (Outcome::Insufficient, None),
        Err(LedgerError::IdempotencyConflict) => (Outcome::Conflict, None),
        Err(error) => return Err(TestCaseError::fail(format!("{request:?}: unexpected {error:?}"))),
    })
}

/// The books: every transaction's running balance never negative and equal to its
/// `balance_after`, their sum the balance, their count what the model expects.
async fn check_books(ledger: &Ledger, org: &str, model: &Model) -> Result<(), TestCaseError> {
    use entity::credit_transaction;
    let rows = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::OrganizationId.eq(org))
        .order_by_asc(credit_transaction::Column::Seq)
        .all(ledger.db())
        .await
        .expect("read transactions");
    let mut running = 0;
    for row in &rows {
        running += row.amount;
        prop_assert!(running >= 0, "negative running balance at {}", row.id);
        prop_assert_eq!(row.balance_after, running, "balance_after of {}", row.id);
    }
    let balance = ledger.balance(org).await.expect("balance").balance;
    prop_assert_eq!(balance, running, "balance = sum of transactions");
    prop_assert_eq!(balance, model.balance, "balance = the model's");
    prop_assert_eq!(rows.len(), model.transactions, "one transaction per applied request");
    Ok(())
}

/// Runs `steps` on a fresh organization of `ledger` and on the model, comparing as it goes.
async fn run_steps(ledger: &Ledger, steps: &[Step]) -> Result<(), TestCaseError> {
    let org = ledger.create_organization("Property", None).await.expect("create organization").id;
    let mut model = Model::default();
    // Transaction ids of remembered keys, to check that a replay returns the original.
    let mut originals: HashMap<String, String> = HashMap::new();
    let mut keyed: Vec<Request> = Vec::new();
    for step in steps {
        match step {
            Step::One(_) | Step::Retry(_) => {
                let request = match step {
                    Step::One(request) => request.clone(),
                    Step::Retry(_) if keyed.is_empty() => continue,
                    Step::Retry(pick) => keyed[pick % keyed.len()].clone(),
                    Step::Burst(_) => unreachable!(),
                };
                let expected = model.apply(&request);
                let (outcome, answer) = send(ledger, &org, &request).await?;
                prop_assert_eq!(outcome, expected, "{:?}", request);
                if let Some((id, balance)) = answer {
                    prop_assert_eq!(balance, model.balance, "the balance answered with {:?}", request);
                    remember(&mut originals, &request, outcome, id)?;
                }
                let balance = ledger.balance(&org).await.expect("balance").balance;
                prop_assert_eq!(balance, model.balance, "after {:?}", request);
                if request.key.is_some() {
                    keyed.push(request);
                }
            }
            Step::Burst(requests) => {
                let possible = model.possible(requests);
                let answers = join_all(requests.iter().map(|request| send(ledger, &org, request))).await;
                let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
                let outcomes: Vec<Outcome> = answers.iter().map(|(outcome, _)| *outcome).collect();
                let Some((_, after)) = possible.iter().find(|(expected, _)| *expected == outcomes) else {
                    let allowed: HashSet<_> = possible.iter().map(|(expected, _)| expected.clone()).collect();
                    return Err(TestCaseError::fail(format!(
                        "{requests:?} at once gave {outcomes:?}, which no serial order gives; possible: {allowed:?}"
                    )));
                };
                model = after.clone();
                for (request, (outcome, answer)) in requests.iter().zip(answers) {
                    if let Some((id, _)) = answer {
                        remember(&mut originals, request, outcome, id)?;
                    }
                }
                keyed.extend(requests.iter().filter(|request| request.key.is_some()).cloned());
                check_books(ledger, &org, &model).await?;
            }
        }
    }
    check_books(ledger, &org, &model).await
}

/// Records the id of an applied keyed request; checks a replay's id against it.
fn remember(
    originals: &mut HashMap<String, String>,
    request: &Request,
    outcome: Outcome,
    id: String,
) -> Result<(), TestCaseError> {
    let Some(key) = &request.key else { return Ok(()) };
    match outcome {
        Outcome::Applied => {
            originals.insert(key.clone(), id);
        }
        Outcome::Replayed => {
            // Within a burst the original may be the answer just before this one.
            if let Some(original) = originals.get(key) {
                prop_assert_eq!(original, &id, "a replay of {:?} returns the original", key);
            }
        }
        _ => {}
    }
    Ok(())
}

fn key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![1 => Just(None), 3 => (0..KEYS).prop_map(|k| Some(format!("k{k}")))]
}

fn consume() -> impl Strategy<Value = Request> {
    (1i64..=60, key()).prop_map(|(amount, key)| Request { kind: Kind::Consume, amount, key })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => consume().prop_map(Step::One),
        2 => (1i64..=100, key()).prop_map(|(amount, key)| Step::One(Request { kind: Kind::Grant, amount, key })),
        2 => any::<usize>().prop_map(Step::Retry),
        2 => prop::collection::vec(consume(), 2..=4).prop_map(Step::Burst),
    ]
}

async fn migrated_ledger(url: &str) -> Ledger {
    let db = credits::db::connect(url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    Ledger::new(db)
}

#[test]
fn the_ledger_behaves_like_its_model_on_random_sequences() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (ledger, _database) = runtime.block_on(async {
        let database = database(Engine::Sqlite).await.expect("SQLite is always there");
        (migrated_ledger(&database.url).await, database)
    });
    let config = Config { cases: 24, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result =
        runner.run(&prop::collection::vec(step(), 1..=40), |steps| runtime.block_on(run_steps(&ledger, &steps)));
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// One fixed sequence on PostgreSQL, where concurrency is real row locking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_behaves_like_its_model_on_postgres() {
    let Some(database) = database(Engine::Postgres).await else { return };
    let ledger = migrated_ledger(&database.url).await;
    let request = |kind, amount, key: Option<&str>| Request { kind, amount, key: key.map(str::to_owned) };
    let consume = |amount, key| request(Kind::Consume, amount, key);
    let steps = vec![
        Step::One(consume(5, Some("a"))),
        Step::One(request(Kind::Grant, 100, Some("g"))),
        Step::One(consume(30, Some("a"))),
        Step::One(consume(30, Some("a"))),
        Step::One(consume(31, Some("a"))),
        Step::One(request(Kind::Grant, 30, Some("a"))),
        Step::One(request(Kind::Grant, 100, Some("g"))),
        Step::Burst(vec![consume(40, Some("b")), consume(40, Some("b")), consume(41, Some("b")), consume(40, None)]),
        Step::Burst(vec![consume(20, None), consume(20, None), consume(20, Some("c")), consume(25, Some("d"))]),
        Step::One(consume(1_000, Some("e"))),
        Step::One(request(Kind::Grant, 1_000, None)),
        Step::One(consume(1_000, Some("e"))),
        Step::Retry(0),
        Step::Burst(vec![consume(500, Some("f")), consume(500, Some("f")), consume(500, Some("f"))]),
    ];
    if let Err(error) = run_steps(&ledger, &steps).await {
        panic!("{error}");
    }
}
