//! Live balances over WebSockets: crossing semantics, ordering, authentication, both
//! sub-protocols, slow and idle clients, shutdown, and two replicas on one PostgreSQL.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, spawn_app, spawn_app_with};
use crate::on_both_engines;
use crate::ws_client::{LEGACY_WS, Received, TRANSPORT_WS, WsClient};

on_both_engines!(
    low_balance_fires_once_per_downward_crossing,
    late_subscribers_are_told_at_once,
    every_committed_change_arrives_in_commit_order,
    slow_subscribers_stall_nobody,
);

const LOW: &str = "subscription($org: ID, $threshold: Credits) { lowBalance(organizationId: $org, threshold: $threshold) { organizationId balance threshold transactionId occurredAt } }";
const CHANGED: &str = "subscription($org: ID) { creditBalanceChanged(organizationId: $org) { id organizationId balance isLow updatedAt } }";

impl TestApp {
    /// Consumes `amount` with `key`; returns the transaction id, or the error code.
    async fn consume(&self, key: &str, amount: i64) -> Result<String, String> {
        let (_, body) = self
            .post(Some(key), "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"live\" }) { transaction { id } } }", json!({ "a": amount }))
            .await;
        match body["data"]["consumeCredits"]["transaction"]["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default().to_owned()),
        }
    }
}

fn payload(message: &Value, field: &str) -> Value {
    assert_eq!(message["type"], "next", "{message}");
    message["payload"]["data"][field].clone()
}

async fn low_balance_fires_once_per_downward_crossing(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Crossing", 500).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 100) { isLow } }", json!({})).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "low", LOW, json!({})).await;
    // Give the subscription time to start before the first change.
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.consume(&key, 300).await.unwrap(); // 200: above the threshold, no event
    assert_eq!(app.consume(&key, 1000).await, Err("INSUFFICIENT_CREDITS".into())); // rolled back: no event
    let crossing = app.consume(&key, 150).await.unwrap(); // 50: crosses
    app.consume(&key, 10).await.unwrap(); // 40: stays low, no event
    let event = payload(&ws.message().await, "lowBalance");
    assert_eq!(event["transactionId"], crossing.as_str(), "the first event is the crossing: {event}");
    assert_eq!((event["balance"].clone(), event["threshold"].clone()), (json!(50), json!(100)));
    assert_eq!(event["organizationId"], org.as_str());

    app.grant(&org, 1000).await; // 1040: not low again, no event
    app.consume(&key, 900).await.unwrap(); // 140: not low, no event
    let again = app.consume(&key, 60).await.unwrap(); // 80: crosses again
    let event = payload(&ws.message().await, "lowBalance");
    assert_eq!(event["transactionId"], again.as_str(), "{event}");
    assert_eq!(event["balance"], 80);

    // Raising the threshold above the balance is a crossing too (no transaction).
    app.grant(&org, 1000).await; // 1080
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 2000) { isLow } }", json!({})).await;
    let event = payload(&ws.message().await, "lowBalance");
    assert_eq!(
        (event["transactionId"].clone(), event["threshold"].clone(), event["balance"].clone()),
        (Value::Null, json!(2000), json!(1080))
    );

    // An explicit threshold argument ignores the organization's.
    ws.subscribe(false, "fixed", LOW, json!({ "threshold": 1050 })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fixed = app.consume(&key, 40).await.unwrap(); // 1040 < 1050: crosses the fixed one
    let event = ws.message().await;
    assert_eq!(event["id"], "fixed", "{event}");
    assert_eq!(payload(&event, "lowBalance")["transactionId"], fixed.as_str());
}

async fn late_subscribers_are_told_at_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Late", 30).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, ADMIN_TOKEN).await;
    ws.subscribe(false, "1", LOW, json!({ "org": org, "threshold": 50 })).await;
    let event = payload(&ws.message().await, "lowBalance");
    assert_eq!(
        (event["balance"].clone(), event["threshold"].clone(), event["transactionId"].clone()),
        (json!(30), json!(50), Value::Null)
    );
    assert!(event["occurredAt"].as_str().unwrap().ends_with('Z'));
    // No threshold anywhere is a client mistake.
    ws.subscribe(false, "2", LOW, json!({ "org": org })).await;
    let error = ws.message().await;
    assert_eq!(error["id"], "2");
    assert_eq!(error["payload"]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{error}");
    assert_eq!(ws.message().await["type"], "complete");
    let _ = key;
}

async fn every_committed_change_arrives_in_commit_order(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Order", 1_000).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "c", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let results = join_all((0..40).map(|_| app.consume(&key, 3))).await;
    assert!(results.iter().all(Result::is_ok));
    let mut seen = Vec::new();
    for _ in 0..40 {
        let balance = payload(&ws.message().await, "creditBalanceChanged");
        assert_eq!(balance["organizationId"], org.as_str());
        assert!(balance["id"].as_str().unwrap().starts_with("bal_"));
        seen.push(balance["balance"].as_i64().unwrap());
    }
    let expected: Vec<i64> = (1..=40).map(|n| 1_000 - 3 * n).collect();
    assert_eq!(seen, expected, "every change once, in commit order");
    assert!(matches!(ws.receive(Duration::from_millis(300)).await, Received::Nothing), "nothing more");
}

async fn slow_subscribers_stall_nobody(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Slow", 10_000).await;
    // This client subscribes and then never reads.
    let mut slow = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    slow.subscribe(false, "s", CHANGED, json!({})).await;
    let mut fast = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    fast.subscribe(false, "f", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changes = 400;
    for chunk in 0..(changes / 50) {
        let results = join_all((0..50).map(|_| app.consume(&key, 1))).await;
        assert!(results.iter().all(Result::is_ok), "chunk {chunk}");
    }
    for n in 1..=changes {
        let balance = payload(&fast.message().await, "creditBalanceChanged");
        assert_eq!(balance["balance"], 10_000 - n, "the reading subscriber gets every change in order");
    }
    // The slow one, once it reads, still gets every change in order (caught up from the database).
    for n in 1..=changes {
        let balance = payload(&slow.message().await, "creditBalanceChanged");
        assert_eq!(balance["balance"], 10_000 - n);
    }
}

#[tokio::test]
async fn unauthenticated_revoked_and_foreign_subscribers_are_refused() {
    let Some(app) = spawn_app(Engine::Sqlite).await else { return };
    let (org_a, key_a) = app.funded_org("A", 10).await;
    let (_org_b, key_b) = app.funded_org("B", 10).await;
    // No token, a wrong token: 4403.
    let mut ws = WsClient::init(&app.base, TRANSPORT_WS, json!({})).await;
    assert_eq!(ws.closed().await, 4403);
    let mut ws = WsClient::init(&app.base, TRANSPORT_WS, json!({ "authorization": "Bearer crk_nope" })).await;
    assert_eq!(ws.closed().await, 4403);
    let mut ws = WsClient::init(&app.base, LEGACY_WS, json!({ "authorization": "crk_nope" })).await;
    assert_eq!(ws.message().await["type"], "connection_error");
    assert_eq!(ws.closed().await, 4403);
    // A revoked key.
    let data = app.ok(Some(ADMIN_TOKEN), "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"r\" }) { secret apiKey { id } } }", json!({ "org": org_a })).await;
    let (secret, id) =
        (data["createApiKey"]["secret"].as_str().unwrap().to_owned(), data["createApiKey"]["apiKey"]["id"].clone());
    app.ok(Some(ADMIN_TOKEN), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": id })).await;
    let mut ws = WsClient::init(&app.base, TRANSPORT_WS, json!({ "AUTHORIZATION": secret })).await;
    assert_eq!(ws.closed().await, 4403);
    // The token may come on the upgrade request instead; the bare token form works too.
    let mut ws = WsClient::open(&app.base, TRANSPORT_WS, Some(&format!("Bearer {key_b}"))).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    // Another organization's balance is FORBIDDEN, and the connection stays usable.
    ws.subscribe(false, "x", CHANGED, json!({ "org": org_a })).await;
    let refused = ws.message().await;
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(ws.message().await["type"], "complete");
    ws.subscribe(false, "q", "{ creditBalance { balance } }", json!({})).await;
    assert_eq!(payload(&ws.message().await, "creditBalance")["balance"], 10);
    let _ = key_a;
}

#[tokio::test]
async fn both_sub_protocols_and_their_rules() {
    let Some(app) = spawn_app(Engine::Sqlite).await else { return };
    let (_, key) = app.funded_org("Protocols", 100).await;
    // Legacy graphql-ws: start / data / stop / complete.
    let mut legacy = WsClient::connect(&app.base, LEGACY_WS, &key).await;
    legacy.subscribe(true, "1", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.consume(&key, 5).await.unwrap();
    let data = legacy.message().await;
    assert_eq!((data["type"].clone(), data["id"].clone()), (json!("data"), json!("1")));
    assert_eq!(data["payload"]["data"]["creditBalanceChanged"]["balance"], 95);
    legacy.send(json!({ "type": "stop", "id": "1" })).await;
    assert_eq!(legacy.message().await, json!({ "type": "complete", "id": "1" }));

    // graphql-transport-ws: ping/pong, validation errors as `error`, complete, and its close codes.
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.send(json!({ "type": "ping" })).await;
    ws.subscribe(false, "bad", "subscription { nope }", json!({})).await;
    let error = ws.message().await;
    assert_eq!((error["type"].clone(), error["id"].clone()), (json!("error"), json!("bad")));
    assert_eq!(error["payload"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    ws.subscribe(false, "live", CHANGED, json!({})).await;
    ws.subscribe(false, "live", CHANGED, json!({})).await;
    assert_eq!(ws.closed().await, 4409, "duplicate operation id");

    let mut early = WsClient::open(&app.base, TRANSPORT_WS, None).await;
    early.subscribe(false, "1", CHANGED, json!({})).await;
    assert_eq!(early.closed().await, 4401, "subscribe before connection_ack");
    let mut twice = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    twice.send(json!({ "type": "connection_init" })).await;
    assert_eq!(twice.closed().await, 4429);
    let mut garbage = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    garbage.send(json!({ "type": "bogus" })).await;
    assert_eq!(garbage.closed().await, 4400);
}

#[tokio::test]
async fn silent_clients_are_closed() {
    let timing = [("CREDITS_WS_INIT_TIMEOUT_MS", "300"), ("CREDITS_WS_KEEPALIVE_MS", "200")];
    let Some(app) = spawn_app_with(Engine::Sqlite, &timing).await else { return };
    let (_, key) = app.funded_org("Idle", 1).await;
    let mut mute = WsClient::open(&app.base, TRANSPORT_WS, None).await;
    assert_eq!(mute.closed().await, 4408, "no connection_init in time");
    // A client that stops reading (and so answers no ping) is closed after three intervals.
    let mut idle = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(idle.closed().await, 4408);
    // A key revoked while its connection is open loses the connection.
    let org = app.create_org("Revoked").await;
    let data = app
        .ok(Some(ADMIN_TOKEN), "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"r\" }) { secret apiKey { id } } }", json!({ "org": org }))
        .await;
    let (secret, id) =
        (data["createApiKey"]["secret"].as_str().unwrap().to_owned(), data["createApiKey"]["apiKey"]["id"].clone());
    let mut revoked = WsClient::connect(&app.base, TRANSPORT_WS, &secret).await;
    revoked.subscribe(false, "c", CHANGED, json!({})).await;
    app.ok(Some(ADMIN_TOKEN), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(revoked.closed().await, 4403);
    // One that keeps answering stays.
    let mut alive = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    let heard = alive.receive(Duration::from_millis(1_500)).await;
    assert!(matches!(heard, Received::Nothing), "{heard:?}");
    alive.subscribe(false, "q", "{ creditBalance { balance } }", json!({})).await;
    assert_eq!(payload(&alive.message().await, "creditBalance")["balance"], 1);
}

#[tokio::test]
async fn shutdown_closes_websockets_cleanly() {
    let Some(database) = crate::helpers::database(Engine::Sqlite).await else { return };
    let config = crate::helpers::test_config(&database.url);
    let app = credits::app::Application::build(&config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut ws = WsClient::connect(&base, TRANSPORT_WS, ADMIN_TOKEN).await;
    stop.send(()).unwrap();
    assert_eq!(ws.closed().await, 1001);
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_subscribers_of_another() {
    let Some(app) = spawn_app(Engine::Postgres).await else { return };
    let replica = app.spawn_replica().await;
    let (org, key) = app.funded_org("Replicated", 100).await;
    let mut on_replica = WsClient::connect(&replica, TRANSPORT_WS, &key).await;
    on_replica.subscribe(false, "c", CHANGED, json!({})).await;
    on_replica.subscribe(false, "l", LOW, json!({ "threshold": 50 })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = app.consume(&key, 30).await.unwrap();
    let second = app.consume(&key, 30).await.unwrap();
    let mut changed = Vec::new();
    let mut low = Vec::new();
    while changed.len() < 2 || low.is_empty() {
        let message = on_replica.message().await;
        match message["id"].as_str() {
            Some("c") => changed.push(payload(&message, "creditBalanceChanged")["balance"].clone()),
            Some("l") => low.push(payload(&message, "lowBalance")["transactionId"].clone()),
            _ => panic!("{message}"),
        }
    }
    assert_eq!(changed, vec![json!(70), json!(40)]);
    assert_eq!(low, vec![json!(second)]);
    let _ = (org, first);
}

/// The reference graphql-transport-ws client (npm `graphql-ws`, installed by `.ci/run`
/// into `tests/audit`) is refused with a wrong token and receives a live change.
// Multi-threaded: this test blocks its thread reading the client's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_graphql_ws_client_works() {
    use std::io::BufRead;
    let Some(dir) = crate::helpers::node_tool("graphql-ws") else { return };
    let Some(app) = spawn_app(Engine::Sqlite).await else { return };
    let (org, key) = app.funded_org("Reference", 100).await;
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut node = std::process::Command::new("node")
        .args(["ws-client.mjs", &url, &key])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    let stdout = node.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line = || lines.recv_timeout(Duration::from_secs(20)).expect("graphql-ws client output");
    assert_eq!(next_line(), "refused 4403");
    assert_eq!(next_line(), "ready");
    app.consume(&key, 7).await.unwrap();
    let result: Value = serde_json::from_str(&next_line()).unwrap();
    assert_eq!(result["data"]["creditBalanceChanged"], json!({ "balance": 93, "organizationId": org }));
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

/// Killing the replica's `LISTEN` connection loses no event: it reconnects, and
/// subscribers re-read what was committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_lost_listen_connection() {
    let Some(app) = spawn_app(Engine::Postgres).await else { return };
    let (_, key) = app.funded_org("Chaos", 100).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "c", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = credits::db::connect(&app.database_url()).await.unwrap();
    let killed = sea_orm::ConnectionTrait::execute_unprepared(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();
    assert!(killed.rows_affected() >= 1, "a LISTEN connection was found");
    // Committed while nobody listens.
    app.consume(&key, 1).await.unwrap();
    app.consume(&key, 1).await.unwrap();
    let first = payload(&ws.message().await, "creditBalanceChanged");
    let second = payload(&ws.message().await, "creditBalanceChanged");
    assert_eq!((first["balance"].clone(), second["balance"].clone()), (json!(99), json!(98)));
    app.consume(&key, 1).await.unwrap();
    assert_eq!(payload(&ws.message().await, "creditBalanceChanged")["balance"], 97);
}
