//! Load under faults, shared by the crash and outage tests: clients that retry each
//! idempotency key until it is acknowledged, and a check of the ledger straight from
//! the database afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

const CONSUME: &str = "mutation($amount: Credits!, $key: String!) { consumeCredits(input: { amount: $amount, description: \"load\", idempotencyKey: $key }) { transaction { id amount } replayed } }";

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The change is acknowledged: this transaction, original or replayed.
    Acknowledged { transaction_id: String, replayed: bool },
    /// `SERVICE_UNAVAILABLE`, with this HTTP status: retry the same key.
    Unavailable(u16),
    /// No answer (connection refused or reset, or no response in time): retry.
    NoAnswer(String),
}

/// One attempt and how long it took.
#[derive(Debug)]
pub struct Attempt {
    pub key: String,
    pub elapsed: Duration,
    pub outcome: Outcome,
}

/// A key that was acknowledged.
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub amount: i64,
    pub transaction_id: String,
}

/// Sends one `consumeCredits` with `key`; panics on any answer that the contract does
/// not allow under faults (any error code but `SERVICE_UNAVAILABLE`, a 5xx other than
/// 503, `INTERNAL_SERVER_ERROR` anywhere, a non-JSON body).
pub async fn attempt(client: &reqwest::Client, base: &str, api_key: &str, key: &str, amount: i64) -> Attempt {
    let started = Instant::now();
    let sent = client
        .post(format!("{base}/graphql"))
        .bearer_auth(api_key)
        .json(&json!({ "query": CONSUME, "variables": { "amount": amount, "key": key } }))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Attempt {
                key: key.to_owned(),
                elapsed: started.elapsed(),
                outcome: Outcome::NoAnswer(error.to_string()),
            };
        }
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        // The server died while sending the body.
        Err(error) => {
            return Attempt {
                key: key.to_owned(),
                elapsed: started.elapsed(),
                outcome: Outcome::NoAnswer(error.to_string()),
            };
        }
    };
    let elapsed = started.elapsed();
    assert!(!text.contains("INTERNAL_SERVER_ERROR"), "key {key}: HTTP {status} {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("key {key}: HTTP {status}, not JSON: {text}"));
    let outcome = if let Some(errors) = body.get("errors") {
        let code = &errors[0]["extensions"]["code"];
        assert_eq!(code, "SERVICE_UNAVAILABLE", "key {key}: HTTP {status} {body}");
        assert!(
            status == 200 || status == 503,
            "key {key}: SERVICE_UNAVAILABLE must be 200 or 503, got {status}: {body}"
        );
        Outcome::Unavailable(status)
    } else {
        assert_eq!(status, 200, "key {key}: {body}");
        let payload = &body["data"]["consumeCredits"];
        assert_eq!(payload["transaction"]["amount"], -amount, "key {key}: {body}");
        Outcome::Acknowledged {
            transaction_id: payload["transaction"]["id"].as_str().expect("transaction id").to_owned(),
            replayed: payload["replayed"] == true,
        }
    };
    Attempt { key: key.to_owned(), elapsed, outcome }
}

/// What a client ends with: its acknowledged keys and every attempt it made.
pub type Tally = (HashMap<String, Acknowledged>, Vec<Attempt>);

/// Clients consuming with fresh idempotency keys, each retried until acknowledged.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    /// Starts `clients` tasks against `base`, as `api_key`, each consuming 1–7 credits
    /// under keys `c<client>-<n>` until [`Load::finish`]. A key once started is retried
    /// until acknowledged, whatever happens meanwhile (or until `give_up_after`).
    pub fn start(base: &str, api_key: &str, clients: usize, give_up_after: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|client| {
                let (base, api_key, stop) = (base.to_owned(), api_key.to_owned(), stop.clone());
                tokio::spawn(async move {
                    // Short timeouts: a killed server must not stall a client for long,
                    // and a request that hangs is recorded as such.
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(15))
                        .connect_timeout(Duration::from_secs(2))
                        .build()
                        .expect("client");
                    let (mut acknowledged, mut attempts) = (HashMap::new(), Vec::new());
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("c{client}-{n}");
                        let amount = ((client + n) % 7 + 1) as i64;
                        let since = Instant::now();
                        loop {
                            let attempt = attempt(&http, &base, &api_key, &key, amount).await;
                            let done = match &attempt.outcome {
                                Outcome::Acknowledged { transaction_id, .. } => {
                                    let transaction_id = transaction_id.clone();
                                    acknowledged.insert(key.clone(), Acknowledged { amount, transaction_id });
                                    true
                                }
                                _ => false,
                            };
                            attempts.push(attempt);
                            if done {
                                break;
                            }
                            assert!(
                                since.elapsed() < give_up_after,
                                "key {key} never acknowledged: {:?}",
                                attempts.last()
                            );
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                        n += 1;
                    }
                    (acknowledged, attempts)
                })
            })
            .collect();
        Self { stop, clients }
    }

    /// Stops starting new keys, waits until every started key is acknowledged; returns
    /// the acknowledged keys and every attempt.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acknowledged, mut attempts) = (HashMap::new(), Vec::new());
        for client in self.clients {
            let (mine, tried) = tokio::time::timeout(Duration::from_secs(120), client)
                .await
                .expect("clients finish")
                .expect("a client panicked");
            acknowledged.extend(mine);
            attempts.extend(tried);
        }
        (acknowledged, attempts)
    }
}

/// Reads the organization's ledger from the database and checks it against what the
/// clients were told: every acknowledged key charged exactly once (its one transaction,
/// with its amount and the id the client saw), no other consumption, the balance equal
/// to `granted` minus those charges and to the sum of the transactions, every running
/// balance matching `balanceAfter` and never negative.
pub async fn assert_charged_exactly_once(
    database_url: &str,
    organization_id: &str,
    granted: i64,
    acknowledged: &HashMap<String, Acknowledged>,
) {
    use entity::{credit_balance, credit_transaction};
    let db = credits::db::connect(database_url).await.expect("connect for the ledger check");
    let rows = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::OrganizationId.eq(organization_id))
        .order_by_asc(credit_transaction::Column::Seq)
        .all(&db)
        .await
        .expect("read transactions");
    let balance = credit_balance::Entity::find()
        .filter(credit_balance::Column::OrganizationId.eq(organization_id))
        .one(&db)
        .await
        .expect("read balance")
        .expect("a balance row")
        .balance;
    db.close().await.ok();

    let mut running = 0i64;
    let mut by_key: HashMap<&str, Vec<&credit_transaction::Model>> = HashMap::new();
    for row in &rows {
        running += row.amount;
        assert_eq!(row.balance_after, running, "balanceAfter of {} (seq {})", row.id, row.seq);
        assert!(row.balance_after >= 0, "negative balance after {}", row.id);
        if row.kind == "CONSUMPTION" {
            let key = row.idempotency_key.as_deref().expect("every consume had a key");
            by_key.entry(key).or_default().push(row);
        }
    }
    for (key, acked) in acknowledged {
        let charged = by_key.get(key.as_str()).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(charged.len(), 1, "key {key} was acknowledged and must be charged exactly once: {charged:?}");
        assert_eq!(charged[0].amount, -acked.amount, "key {key}");
        assert_eq!(charged[0].id, acked.transaction_id, "key {key}: the id the client was given");
    }
    let unacknowledged: Vec<_> = by_key.keys().filter(|key| !acknowledged.contains_key(**key)).collect();
    assert!(
        unacknowledged.is_empty(),
        "charged but never acknowledged (every started key is retried): {unacknowledged:?}"
    );
    let charged: i64 = acknowledged.values().map(|acked| acked.amount).sum();
    assert_eq!(balance, running, "balance = sum of transactions");
    assert_eq!(balance, granted - charged, "balance = granted - every acknowledged charge");
}
