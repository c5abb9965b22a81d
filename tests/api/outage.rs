//! PostgreSQL goes away mid-load and comes back: the same server answers
//! `SERVICE_UNAVAILABLE` quickly while it is away, never a 500 and never a hang, says so
//! on `/readyz`, and recovers by itself; retried keys are charged exactly once.
//! PostgreSQL only: an SQLite file has no server to stop.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{DedicatedPostgres, spawn_app_on};
use crate::load::{Load, Outcome, assert_charged_exactly_once};

const GRANTED: i64 = 10_000_000;
/// The longest any request may take while the database is away.
const PATIENCE: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_503_and_the_server_recovers_by_itself() {
    let Some(postgres) = DedicatedPostgres::start() else { return };
    let url = postgres.create_database("credits").await;
    let app = spawn_app_on(&url, &[("CREDITS_RATE_LIMIT", "off")]).await;
    let (org, api_key) = app.funded_org("Outage", GRANTED).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();

    let load = Load::start(&app.base, &api_key, 6, Duration::from_secs(90));
    tokio::time::sleep(Duration::from_millis(800)).await;
    postgres.stop();
    let stopped = Instant::now();

    // While it is away: readiness says so, and a request is refused with 503 at once.
    let not_ready = async {
        loop {
            let status = http.get(format!("{}/readyz", app.base)).send().await.expect("readyz answers").status();
            if status == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), not_ready).await.expect("/readyz says 503 within 5 s of the outage");
    // Once the server has noticed (its probe runs every 500 ms), a request is refused
    // before it waits for a connection: 503, at once.
    let refused = async {
        loop {
            let attempt = crate::load::attempt(&http, &app.base, &api_key, "probe-during-outage", 1).await;
            if matches!(attempt.outcome, Outcome::Unavailable(503)) {
                return attempt;
            }
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(5), refused).await.expect("a 503 within 5 s of the outage");
    assert!(refused.elapsed < Duration::from_secs(1), "refused at once: {refused:?}");
    let (status, body) = app.post(Some(&api_key), "{ creditBalance { balance } }", json!({})).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (503, Some("SERVICE_UNAVAILABLE")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed())).await;

    postgres.start_again().expect("restart PostgreSQL");
    let restarted = Instant::now();
    let ready = async {
        loop {
            let response = http.get(format!("{}/readyz", app.base)).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await.expect("/readyz 200 within 10 s of the restart");
    let recovered_in = restarted.elapsed();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (acknowledged, attempts) = load.finish().await;

    let unavailable = attempts.iter().filter(|a| matches!(a.outcome, Outcome::Unavailable(_))).count();
    let no_answer: Vec<(&str, &str)> = attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::NoAnswer(why) => Some((a.key.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    let slowest = attempts.iter().max_by_key(|a| a.elapsed).expect("attempts");
    eprintln!(
        "outage: {} keys, {} attempts, {unavailable} SERVICE_UNAVAILABLE, slowest {:?}, ready {recovered_in:?} after the restart",
        acknowledged.len(),
        attempts.len(),
        slowest.elapsed,
    );
    assert!(unavailable > 0, "the load ran into the outage");
    assert!(no_answer.is_empty(), "the server always answered: {no_answer:?}");
    assert!(slowest.elapsed < PATIENCE, "no request hung longer than {PATIENCE:?}: {slowest:?}");

    // Requests succeed again on the same server, and retried keys were charged once.
    assert_eq!(app.balance(&api_key).await, app.transaction_sum(&api_key).await.0);
    assert_charged_exactly_once(&url, &org, GRANTED, &acknowledged).await;
}
