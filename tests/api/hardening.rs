//! Hardening: explorers introspect, abusive documents and floods are refused before any
//! database work, no tenant starves another, slow or oversized clients are cut off.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::helpers::{ADMIN_TOKEN, Engine, spawn_app, spawn_app_tweaked, spawn_app_with};
use crate::on_both_engines;
use crate::ws_client::{TRANSPORT_WS, WsClient};

on_both_engines!(
    a_block_string_cannot_hide_a_deep_value_and_the_server_lives_on,
    floods_are_refused_before_any_database_work,
    control_characters_in_strings_and_ids_are_bad_user_input,
    a_flooding_key_is_rate_limited_and_another_key_is_untouched,
);

/// `node introspect.mjs`: the graphql-js standard introspection query, built into a
/// client schema.
fn introspect(url: &str, token: Option<&str>) -> Option<(bool, String)> {
    let dir = crate::helpers::node_tool("graphql")?;
    let mut command = Command::new("node");
    command.arg("introspect.mjs").arg(url).current_dir(dir);
    if let Some(token) = token {
        command.arg(token);
    }
    let output = command.output().expect("run node");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Some((output.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorers_build_a_client_schema_with_or_without_a_token() {
    let Some(app) = spawn_app(Engine::Sqlite).await else { return };
    let (_, key) = app.funded_org("Explorer", 0).await;
    let url = format!("{}/graphql", app.base);
    for token in [None, Some(key.as_str()), Some(ADMIN_TOKEN)] {
        let (url, token) = (url.clone(), token.map(str::to_owned));
        let Some((ok, output)) =
            tokio::task::spawn_blocking(move || introspect(&url, token.as_deref())).await.expect("join")
        else {
            return;
        };
        assert!(ok, "introspection failed: {output}");
        assert!(output.starts_with("types="), "{output}");
    }
    // Nested deeper than the standard query: refused.
    let nested = "{ __type(name: \"Query\") { fields { type { fields { type { fields { name } } } } } } }";
    app.fails(None, nested, json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    let repeated: String = (0..11).map(|i| format!("s{i}: __schema {{ queryType {{ name }} }} ")).collect();
    app.fails(None, &format!("{{ {repeated} }}"), json!({}), "GRAPHQL_VALIDATION_FAILED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_can_be_turned_off() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_INTROSPECTION", "false")]).await else { return };
    app.fails(Some(ADMIN_TOKEN), "{ __schema { types { name } } }", json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    app.fails(None, "{ __type(name: \"Query\") { name } }", json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    let data = app.ok(None, "{ __typename }", json!({})).await;
    assert_eq!(data["__typename"], "Query");
}

async fn a_block_string_cannot_hide_a_deep_value_and_the_server_lives_on(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Deep", 10).await;
    // The block string's inner quote once hid what followed from the nesting scan, and
    // the parser then overflowed its stack on the list: the whole process aborted.
    let bomb = format!(
        r#"{{ creditBalance(organizationId: """a"b""") {{ balance }} x: creditTransactions(filter: {{ referenceId: {}"x"{} }}) {{ totalCount }} }}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    for token in [None, Some(key.as_str())] {
        let (status, body) = app.post(token, &bomb, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{body}");
        assert!(body.get("data").is_none(), "{body}");
    }
    // Deep objects too, and through the GET route.
    let objects =
        format!("{{ creditBalance(organizationId: {}1{}) {{ balance }} }}", "{a:".repeat(3_000), "}".repeat(3_000));
    let (status, _) = app.post(None, &objects, json!({})).await;
    assert_eq!(status, 400);
    let response = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[("query", bomb.as_str())])
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(app.balance(&key).await, 10, "the server lives on");
}

async fn floods_are_refused_before_any_database_work(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Flood", 10).await;
    let counts: String = (0..120).map(|i| format!("c{i}: creditTransactions(first: 100) {{ totalCount }} ")).collect();
    let flood = format!("{{ {counts} }}");
    // Refused with its own code even with a token that does not exist: nothing, not even
    // the token's lookup, reached the database.
    for token in [key.as_str(), "crk_does_not_exist"] {
        let error = app.fails(Some(token), &flood, json!({}), "GRAPHQL_VALIDATION_FAILED").await;
        assert!(error["message"].as_str().is_some_and(|m| m.contains("costs")), "{error}");
    }
    // A batch is limited by the sum of its operations: ten that each pass alone.
    let one: String = (0..12).map(|i| format!("c{i}: creditTransactions(first: 100) {{ totalCount }} ")).collect();
    let request = json!({ "query": format!("{{ {one} }}") });
    app.ok(Some(&key), &format!("{{ {one} }}"), json!({})).await;
    let batch = json!((0..10).map(|_| request.clone()).collect::<Vec<_>>());
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{body}");
    // A legitimate full page with its count passes.
    app.ok(
        Some(&key),
        "{ creditTransactions(first: 100) { totalCount edges { cursor node { id kind amount balanceAfter description createdAt } } pageInfo { hasNextPage endCursor } } }",
        json!({}),
    )
    .await;
}

async fn control_characters_in_strings_and_ids_are_bad_user_input(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Nul", 10).await;
    let nul = "a\u{0}b";
    app.fails(Some(&key), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": nul }), "BAD_USER_INPUT").await;
    app.fails(
        Some(ADMIN_TOKEN),
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
        json!({ "id": nul }),
        "BAD_USER_INPUT",
    )
    .await;
    app.fails(Some(&key), "{ node(id: \"key_\\u0000\") { id } }", json!({}), "BAD_USER_INPUT").await;
    let consume = "mutation($d: String!) { consumeCredits(input: { amount: 1, description: $d }) { replayed } }";
    app.fails(Some(&key), consume, json!({ "d": nul }), "BAD_USER_INPUT").await;
    app.fails(Some(&key), consume, json!({ "d": "bell\u{7}" }), "BAD_USER_INPUT").await;
    app.fails(
        Some(ADMIN_TOKEN),
        "query($o: ID) { creditBalance(organizationId: $o) { balance } }",
        json!({ "o": format!("{org}\t") }),
        "BAD_USER_INPUT",
    )
    .await;
    // Tab and newline are fine in a description.
    app.ok(Some(&key), consume, json!({ "d": "line one\n\tline two" })).await;
    assert_eq!(app.transaction_sum(&key).await, (9, 2));
}

async fn a_flooding_key_is_rate_limited_and_another_key_is_untouched(engine: Engine) {
    let Some(app) = spawn_app_with(engine, &[("CREDITS_RATE_LIMIT", "2")]).await else { return };
    let (_, flooding) = app.funded_org("Flooding", 0).await;
    let (_, quiet) = app.funded_org("Quiet", 0).await;
    let limited = flood_until_limited(&app, &flooding).await;
    let response = limited.expect("a flood of 40 requests at 2/s (burst 4) must be limited");
    let retry_after: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some_and(|s| s >= 1), "{body}");
    assert!(body.get("data").is_none());
    // Another organization's key is untouched.
    assert_eq!(app.balance(&quiet).await, 0);
    // A WebSocket subscribe takes a token too: the flooding key is refused there as well.
    let mut socket = WsClient::connect(&app.base, TRANSPORT_WS, &flooding).await;
    flood_until_limited(&app, &flooding).await.expect("limited again");
    // A token comes back every 500 ms: of five quick subscribes, at most one gets one.
    for id in 1..=5 {
        socket.subscribe(false, &id.to_string(), "subscription { creditBalanceChanged { balance } }", json!({})).await;
    }
    let message = socket.message().await;
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{message}");
}

/// Sends requests with `key` until one is refused with 429 (at most 40).
async fn flood_until_limited(app: &crate::helpers::TestApp, key: &str) -> Option<reqwest::Response> {
    for _ in 0..40 {
        let response = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(json!({ "query": "{ creditBalance { balance } }" }).to_string())
            .send()
            .await
            .expect("request");
        if response.status().as_u16() == 429 {
            return Some(response);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let Some(app) = spawn_app_tweaked(Engine::Sqlite, &[], |config| {
        config.limits.header_read_timeout = Duration::from_millis(1_000);
        config.limits.idle_timeout = Duration::from_millis(3_000);
    })
    .await
    else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Slowloris: half a request, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: app").await.expect("write");
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a slow client must be disconnected: {read:?}");
    assert!(started.elapsed() < Duration::from_millis(2_500), "{:?}", started.elapsed());
    // A keep-alive connection survives a pause longer than the header timeout …
    let mut kept = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(request).await.expect("write");
    let read = kept.read(&mut buffer).await.expect("response");
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    kept.write_all(request).await.expect("write after a pause");
    let read = kept.read(&mut buffer).await.expect("response after a pause");
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"), "kept alive past the header timeout");
    // … and is closed once idle for longer than the idle timeout.
    let read = tokio::time::timeout(Duration::from_secs(6), kept.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "an idle connection must be closed: {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_too_many_sockets_are_refused() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_WS_MAX_CONNECTIONS_PER_TOKEN", "2")]).await else {
        return;
    };
    let (_, key) = app.funded_org("Sockets", 0).await;
    let mut big = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    big.send_raw(Message::Text("x".repeat(1024 * 1024).into())).await;
    assert_eq!(big.closed().await, 1009);
    let _first = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    let _second = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    let mut third = WsClient::init(&app.base, TRANSPORT_WS, json!({ "authorization": key })).await;
    assert_eq!(third.closed().await, 1013);
    // Another token has its own allowance.
    let _admin = WsClient::connect(&app.base, TRANSPORT_WS, ADMIN_TOKEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_cors_origin_starts_and_allows_any_origin() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_CORS_ORIGINS", "*")]).await else { return };
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight");
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_unavailable_not_internal() {
    let Some(database) = crate::helpers::database(Engine::Postgres).await else { return };
    let db = credits::db::connect_with(&database.url, Duration::from_millis(100)).await.expect("connect");
    let error = sea_orm::ConnectionTrait::execute_unprepared(&db, "SELECT pg_sleep(2)").await.expect_err("timed out");
    let error = credits::ledger::LedgerError::from(error);
    assert!(matches!(error, credits::ledger::LedgerError::Unavailable(_)), "{error:?}");
}
