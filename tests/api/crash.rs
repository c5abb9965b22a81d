//! Crash safety: the real binary is killed with SIGKILL again and again under load and
//! started again on the same database; every acknowledged consume is charged exactly once.

use std::time::Duration;

use crate::helpers::{Engine, ServerProcess, TestApp, database};
use crate::load::{Load, Outcome, assert_charged_exactly_once};
use crate::on_both_engines;

on_both_engines!(killed_mid_load_the_server_charges_every_acknowledged_key_exactly_once);

const CLIENTS: usize = 16;
const KILLS: usize = 4;
const GRANTED: i64 = 10_000_000;

async fn killed_mid_load_the_server_charges_every_acknowledged_key_exactly_once(engine: Engine) {
    let Some(database) = database(engine).await else { return };
    let mut server = ServerProcess::start(&database.url, &[]).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (org, api_key) = app.funded_org("Crash", GRANTED).await;

    let load = Load::start(&server.base, &api_key, CLIENTS, Duration::from_secs(60));
    for round in 0..KILLS {
        // Let requests pile up, then pull the plug at an arbitrary point.
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acknowledged, attempts) = load.finish().await;

    let lost = attempts.iter().filter(|a| matches!(a.outcome, Outcome::NoAnswer(_))).count();
    let replayed =
        attempts.iter().filter(|a| matches!(a.outcome, Outcome::Acknowledged { replayed: true, .. })).count();
    eprintln!(
        "crash ({engine:?}): {} keys acknowledged, {} attempts, {lost} without an answer, {replayed} replays",
        acknowledged.len(),
        attempts.len()
    );
    assert!(acknowledged.len() >= CLIENTS * KILLS, "the load made progress: {}", acknowledged.len());
    assert!(lost > 0, "the kills hit requests in flight (else this test proves nothing)");

    // Every acknowledged key replays its original on the restarted server.
    let http = reqwest::Client::new();
    for (key, acked) in acknowledged.iter().take(50) {
        let again = crate::load::attempt(&http, &server.base, &api_key, key, acked.amount).await;
        match again.outcome {
            Outcome::Acknowledged { transaction_id, replayed: true } => {
                assert_eq!(transaction_id, acked.transaction_id)
            }
            other => panic!("key {key} after the crashes: {other:?}"),
        }
    }
    assert_charged_exactly_once(&database.url, &org, GRANTED, &acknowledged).await;
    let balance = app.balance(&api_key).await;
    let (sum, _) = app.transaction_sum(&api_key).await;
    assert_eq!(balance, sum, "the API agrees: balance = sum of transactions");
    // The usage rollup committed with each batch or not at all, like the transactions.
    app.assert_usage_matches_history(&api_key, None).await;
    server.kill();
}

on_both_engines!(a_hold_left_by_a_killed_server_expires_on_time_after_the_restart);

/// A server is killed while holds are active: after the restart, each hold is `EXPIRED`
/// at its deadline and written by the sweeper within seconds; nothing stays reserved.
async fn a_hold_left_by_a_killed_server_expires_on_time_after_the_restart(engine: Engine) {
    use serde_json::json;
    let Some(database) = database(engine).await else { return };
    let mut server = ServerProcess::start(&database.url, &[]).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (_, api_key) = app.funded_org("Crashed holds", 100).await;
    let hold = "mutation($ttl: Int) { createHold(input: { amount: 30, description: \"render\", ttlSeconds: $ttl }) { hold { id } } }";
    let short = app.ok(Some(&api_key), hold, json!({ "ttl": 2 })).await["createHold"]["hold"]["id"].clone();
    let long = app.ok(Some(&api_key), hold, json!({ "ttl": 3600 })).await["createHold"]["hold"]["id"].clone();
    server.kill();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    server.restart().await;
    let app = TestApp::attach(&server.base, &database.url);
    // Past the short hold's deadline: only the long one holds credits.
    let started = std::time::Instant::now();
    loop {
        let balance = app.ok(Some(&api_key), "{ creditBalance { balance held available } }", json!({})).await;
        if balance["creditBalance"] == json!({ "balance": 100, "held": 30, "available": 70 }) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "the expired hold still holds: {balance}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = credits::db::connect(&database.url).await.expect("connect");
    let started = std::time::Instant::now();
    loop {
        use sea_orm::EntityTrait;
        let row = entity::credit_hold::Entity::find_by_id(short.as_str().unwrap().to_owned()).one(&db).await.unwrap();
        if row.as_ref().is_some_and(|row| row.status == "EXPIRED") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "the restarted server's sweeper never wrote the expiry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node = "query($id: ID!) { node(id: $id) { ... on CreditHold { status } } }";
    assert_eq!(app.ok(Some(&api_key), node, json!({ "id": long })).await["node"]["status"], "ACTIVE");
    let released =
        app.ok(Some(&api_key), "mutation($id: ID!) { releaseHold(id: $id) { status } }", json!({ "id": long })).await;
    assert_eq!(released["releaseHold"]["status"], "RELEASED");
    let balance = app.ok(Some(&api_key), "{ creditBalance { balance held available } }", json!({})).await;
    assert_eq!(balance["creditBalance"], json!({ "balance": 100, "held": 0, "available": 100 }));
    server.kill();
}
