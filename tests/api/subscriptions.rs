//! Live balances over WebSockets: crossing semantics, ordering, authentication, both
//! sub-protocols, slow and idle clients, shutdown, two replicas on one PostgreSQL,
//! forged notifications, and revocation closing sockets at once.

use std::time::{Duration, Instant};

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
    forged_notifications_reach_no_subscriber_and_delay_nothing,
    revoked_keys_lose_their_websockets_within_a_second,
    a_lagging_subscriber_gets_a_large_backlog_in_order,
    a_raised_threshold_is_read_from_the_database,
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

impl TestApp {
    /// Creates an API key for `org` as admin; returns (id, secret).
    async fn key_with_id(&self, org: &str) -> (String, String) {
        let data = self
            .ok(Some(ADMIN_TOKEN), "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"live\" }) { secret apiKey { id } } }", json!({ "org": org }))
            .await;
        let key = &data["createApiKey"];
        (key["apiKey"]["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
    }

    /// Revokes an API key over GraphQL, as admin.
    async fn revoke(&self, id: &str) {
        self.ok(Some(ADMIN_TOKEN), "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", json!({ "id": id }))
            .await;
    }

    /// Sends a notification by hand on the app's PostgreSQL database.
    async fn pg_notify(&self, channel: &str, notification: &str) {
        let db = credits::db::connect(&self.database_url()).await.unwrap();
        let statement = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [channel.into(), notification.into()],
        );
        sea_orm::ConnectionTrait::execute_raw(&db, statement).await.unwrap();
        db.close().await.ok();
    }

    /// Kills every PostgreSQL `LISTEN` connection (the replicas' live-event feeds).
    async fn kill_listen_connections(&self) {
        let db = credits::db::connect(&self.database_url()).await.unwrap();
        let killed = sea_orm::ConnectionTrait::execute_unprepared(
            &db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
        assert!(killed.rows_affected() >= 1, "a LISTEN connection was found");
        db.close().await.ok();
    }
}

/// The next message, which must come before `deadline`.
async fn message_by(ws: &mut WsClient, deadline: Instant, what: &str) -> Value {
    match ws.receive(deadline.saturating_duration_since(Instant::now())).await {
        Received::Json(value) => value,
        other => panic!("{what}: expected a message in time, got {other:?}"),
    }
}

/// The close code, which must come before `deadline`.
async fn closed_by(ws: &mut WsClient, deadline: Instant, what: &str) -> u16 {
    loop {
        match ws.receive(deadline.saturating_duration_since(Instant::now())).await {
            Received::Closed(code) => return code,
            Received::Json(_) => continue,
            Received::Nothing => panic!("{what}: the socket was not closed in time"),
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
    // An operation's id is free again once it has completed; a message many times the
    // socket's 1 KiB read buffer arrives whole.
    let padded = format!("{{ creditBalance {{ balance }} }}{}", " ".repeat(40_000));
    for query in ["{ creditBalance { balance } }", padded.as_str()] {
        ws.subscribe(false, "again", query, json!({})).await;
        assert_eq!(payload(&ws.message().await, "creditBalance")["balance"], 95);
        assert_eq!(ws.message().await, json!({ "type": "complete", "id": "again" }));
    }
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

/// A batch of many organizations' consumes sends all its notifications in one statement;
/// each organization's subscribers on another replica still hear of their own change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_organization_of_a_batch_reaches_its_subscribers_on_another_replica() {
    let Some(app) = spawn_app(Engine::Postgres).await else { return };
    let replica = app.spawn_replica().await;
    let mut keys = Vec::new();
    let mut sockets = Vec::new();
    for n in 0..8 {
        let (_, key) = app.funded_org(&format!("Batched {n}"), 100).await;
        let mut ws = WsClient::connect(&replica, TRANSPORT_WS, &key).await;
        ws.subscribe(false, "c", CHANGED, json!({})).await;
        keys.push(key);
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let consumed = join_all(keys.iter().enumerate().map(|(n, key)| app.consume(key, n as i64 + 1))).await;
    assert!(consumed.iter().all(Result::is_ok), "{consumed:?}");
    for (n, ws) in sockets.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let message = message_by(ws, deadline, "its organization's change").await;
        assert_eq!(payload(&message, "creditBalanceChanged")["balance"], json!(100 - (n as i64 + 1)));
    }
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
    app.kill_listen_connections().await;
    // Committed while nobody listens.
    app.consume(&key, 1).await.unwrap();
    app.consume(&key, 1).await.unwrap();
    let first = payload(&ws.message().await, "creditBalanceChanged");
    let second = payload(&ws.message().await, "creditBalanceChanged");
    assert_eq!((first["balance"].clone(), second["balance"].clone()), (json!(99), json!(98)));
    app.consume(&key, 1).await.unwrap();
    assert_eq!(payload(&ws.message().await, "creditBalanceChanged")["balance"], 97);
}

async fn forged_notifications_reach_no_subscriber_and_delay_nothing(engine: Engine) {
    if engine == Engine::Sqlite {
        eprintln!("N/A on SQLite: there is no NOTIFY channel to forge (the hub is in-process)");
        return;
    }
    let Some(app) = spawn_app(engine).await else { return };
    let (org, first_key) = app.funded_org("Forged", 100).await; // seq 1
    app.ok(Some(&first_key), "mutation { setLowBalanceThreshold(threshold: 50) { isLow } }", json!({})).await;
    let (key_id, key) = app.key_with_id(&org).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "c", CHANGED, json!({})).await;
    ws.subscribe(false, "l", LOW, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let channel = credits::ledger::events::BALANCE_CHANNEL;
    for forged in [
        "hello".to_owned(),
        "{}".to_owned(),
        // A full event in the old format, with a made-up balance and transaction.
        format!(r#"{{"k":"c","o":"{org}","s":2,"b":1,"t":"ctx_forged","a":"2030-01-01T00:00:00Z"}}"#),
        // A well-formed hint for a change far in the future.
        format!(r#"{{"k":"c","o":"{org}","s":999999}}"#),
        // A threshold far above the balance, and a resync.
        format!(r#"{{"k":"h","o":"{org}","h":100000,"a":"2030-01-01T00:00:00Z"}}"#),
        format!(r#"{{"k":"r","o":"{org}"}}"#),
    ] {
        app.pg_notify(channel, &forged).await;
    }
    // A forged revocation of a live key only makes its connection re-check the key.
    app.pg_notify(credits::ledger::events::KEY_CHANNEL, &key_id).await;
    let heard = ws.receive(Duration::from_millis(500)).await;
    assert!(matches!(heard, Received::Nothing), "forged notifications reached a subscriber: {heard:?}");

    // The next genuine changes arrive at once, with the database's data.
    let started = Instant::now();
    app.consume(&key, 30).await.unwrap(); // 70: not low
    let changed =
        payload(&message_by(&mut ws, started + Duration::from_secs(1), "genuine change").await, "creditBalanceChanged");
    assert_eq!(changed["balance"], 70, "{changed}");
    let started = Instant::now();
    let crossing = app.consume(&key, 30).await.unwrap(); // 40 < 50: crosses
    let (mut balance, mut low) = (None, None);
    while balance.is_none() || low.is_none() {
        let message = message_by(&mut ws, started + Duration::from_secs(1), "genuine crossing").await;
        match message["id"].as_str() {
            Some("c") => balance = Some(payload(&message, "creditBalanceChanged")["balance"].clone()),
            Some("l") => low = Some(payload(&message, "lowBalance")),
            _ => panic!("{message}"),
        }
    }
    assert_eq!(balance, Some(json!(40)));
    let low = low.unwrap();
    assert_eq!((low["transactionId"].clone(), low["threshold"].clone()), (json!(crossing), json!(50)), "{low}");
}

async fn revoked_keys_lose_their_websockets_within_a_second(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, bystander_key) = app.funded_org("Revoked", 100).await;
    // Every replica must close the key's sockets; on SQLite there is one process.
    let mut bases = vec![app.base.clone()];
    if engine == Engine::Postgres {
        bases.push(app.spawn_replica().await);
    }
    let open_all = |token: String| {
        let bases = bases.clone();
        async move {
            let mut sockets = Vec::new();
            for base in &bases {
                let mut ws = WsClient::connect(base, TRANSPORT_WS, &token).await;
                ws.subscribe(false, "c", CHANGED, json!({})).await;
                sockets.push(ws);
            }
            sockets
        }
    };
    let (by_graphql_id, by_graphql) = app.key_with_id(&org).await;
    let (by_cli_id, by_cli) = app.key_with_id(&org).await;
    let mut doomed = open_all(by_graphql.clone()).await;
    let mut doomed_by_cli = open_all(by_cli.clone()).await;
    let mut bystanders = open_all(bystander_key.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Over GraphQL (the default keep-alive is 15 s, so only the hint can be this fast).
    let revoked = Instant::now();
    app.revoke(&by_graphql_id).await;
    for (n, ws) in doomed.iter_mut().enumerate() {
        assert_eq!(closed_by(ws, revoked + Duration::from_secs(1), &format!("GraphQL revoke, server {n}")).await, 4403);
    }
    app.fails(Some(&by_graphql), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;

    // From the command line, another process.
    let url = app.database_url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_credits"))
            .args(["api-key", "revoke", "--id", &by_cli_id])
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run credits")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let revoked = Instant::now();
    for (n, ws) in doomed_by_cli.iter_mut().enumerate() {
        assert_eq!(closed_by(ws, revoked + Duration::from_secs(1), &format!("CLI revoke, server {n}")).await, 4403);
    }

    // Other keys of the organization keep their sockets, and their events.
    app.consume(&bystander_key, 1).await.unwrap();
    for ws in &mut bystanders {
        assert_eq!(payload(&ws.message().await, "creditBalanceChanged")["balance"], 99);
    }
    let _ = by_cli;
}

async fn a_lagging_subscriber_gets_a_large_backlog_in_order(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let changes: i64 = 2_000;
    let (_, key) = app.funded_org("Backlog", 100_000).await;
    // This client subscribes, then reads nothing while the backlog builds up.
    let mut lagging = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    lagging.subscribe(false, "s", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for chunk in 0..(changes / 50) {
        let results = join_all((0..50).map(|_| app.consume(&key, 1))).await;
        assert!(results.iter().all(Result::is_ok), "chunk {chunk}");
    }
    for n in 1..=changes {
        let balance = payload(&lagging.message().await, "creditBalanceChanged");
        assert_eq!(balance["balance"], 100_000 - n, "every change once, in order");
    }
    assert!(matches!(lagging.receive(Duration::from_millis(300)).await, Received::Nothing), "nothing more");
}

async fn a_raised_threshold_is_read_from_the_database(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Threshold", 100).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 10) { isLow } }", json!({})).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "l", LOW, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raised = Instant::now();
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 150) { isLow } }", json!({})).await;
    let event = payload(&message_by(&mut ws, raised + Duration::from_secs(1), "raised threshold").await, "lowBalance");
    assert_eq!(
        (event["threshold"].clone(), event["balance"].clone(), event["transactionId"].clone()),
        (json!(150), json!(100), Value::Null)
    );
    // Lowered again and raised again: one more crossing; the same threshold twice: none.
    // (Hints carry no value: a follower sees the threshold it reads, so the test lets it
    // read the lowered one before raising it again.)
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 20) { isLow } }", json!({})).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 20) { isLow } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 200) { isLow } }", json!({})).await;
    assert_eq!(payload(&ws.message().await, "lowBalance")["threshold"], 200);
    assert!(matches!(ws.receive(Duration::from_millis(300)).await, Received::Nothing), "nothing more");
}

/// A threshold raised while the `LISTEN` connection is down (its notification lost) is
/// still seen: the resync after reconnecting re-reads the threshold too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_raised_while_listen_is_down_still_warns() {
    let Some(app) = spawn_app(Engine::Postgres).await else { return };
    let (_, key) = app.funded_org("Relisten", 100).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 50) { isLow } }", json!({})).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    ws.subscribe(false, "l", LOW, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.kill_listen_connections().await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 500) { isLow } }", json!({})).await;
    let event = payload(&ws.message().await, "lowBalance");
    assert_eq!(
        (event["threshold"].clone(), event["balance"].clone(), event["transactionId"].clone()),
        (json!(500), json!(100), Value::Null)
    );
    // Still low: a consume is no new crossing.
    app.consume(&key, 10).await.unwrap();
    assert!(matches!(ws.receive(Duration::from_millis(300)).await, Received::Nothing), "nothing more");
}
