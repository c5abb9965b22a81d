//! Benchmark of live balances: how long a committed consume takes to reach a
//! `creditBalanceChanged` subscriber, and how many idle subscribers one server process
//! holds at what memory. A load generator, not a test: it checks every response body
//! and event, and prints what it measured.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_live -- [IDLE] [CONSUMES]
//! ```
//! `DATABASE_URL` picks the database (default: a fresh SQLite file); the server runs
//! as a separate `target/release/credits` process so its memory is measured alone.
//! The idle subscribers come as browsers would: each over a `READ` client session of
//! the quiet organization, [`PER_SESSION`] to a session (the server allows 32 WebSockets
//! per token).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, percentile};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Idle subscribers per client session: within the server's 32 WebSockets per token.
const PER_SESSION: usize = 30;

async fn subscribe(base: &str, key: &str, id: String) -> Socket {
    let mut request = format!("{}/graphql/ws", base.replacen("http", "ws", 1)).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let init = json!({ "type": "connection_init", "payload": { "authorization": key } });
    socket.send(Message::Text(init.to_string().into())).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => break,
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("subscriber {id}: no connection_ack, got {other:?}"),
        }
    }
    let subscribe = json!({ "type": "subscribe", "id": id, "payload": { "query": "subscription { creditBalanceChanged { balance } }" } });
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    socket
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let consumes: i64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1_000);
    // The hot row: one organization's key, plus a quiet one for the idle subscribers.
    let server = Server::start(&[("CREDITS_RATE_LIMIT", "off")]).await;
    let base = server.base.clone();
    let database_url = std::env::var("DATABASE_URL").unwrap_or_default();
    let client = reqwest::Client::new();
    let (_, active_key) = server.organization(&client, "active", 1_000_000_000).await;
    let (_, quiet_key) = server.organization(&client, "quiet", 0).await;

    // Idle subscribers, over client sessions as browsers would open them.
    let mut sessions = Vec::with_capacity(idle.div_ceil(PER_SESSION));
    for _ in 0..idle.div_ceil(PER_SESSION) {
        let minted = server
            .gql(
                &client,
                &quiet_key,
                "mutation { createClientSession(input: { scopes: [READ], ttlSeconds: 86400 }) { token } }",
                json!({}),
            )
            .await;
        sessions.push(minted["createClientSession"]["token"].as_str().expect("session token").to_owned());
    }
    let before = server.rss_kib();
    let mut idle_sockets = Vec::with_capacity(idle);
    for batch in 0..idle.div_ceil(250) {
        let opened = futures::future::join_all(
            (batch * 250..((batch + 1) * 250).min(idle))
                .map(|i| subscribe(&base, &sessions[i / PER_SESSION], format!("idle{i}"))),
        )
        .await;
        idle_sockets.extend(opened);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();

    // Latency: one active subscriber, sequential consumes.
    let mut socket = subscribe(&base, &active_key, "live".to_owned()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let mut expected = 1_000_000_000 - 1;
            while expected > 1_000_000_000 - 1 - consumes {
                let Some(Ok(Message::Text(text))) = socket.next().await else { continue };
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                if message["type"] != "next" {
                    continue;
                }
                let balance = message["payload"]["data"]["creditBalanceChanged"]["balance"].as_i64().unwrap();
                assert_eq!(balance, expected, "events arrive once each, in commit order");
                arrivals.lock().unwrap().insert(balance, Instant::now());
                expected -= 1;
            }
        })
    };
    let mut sent = Vec::with_capacity(consumes as usize);
    let run = Instant::now();
    for n in 1..=consumes {
        let t0 = Instant::now();
        let data = server
            .gql(
                &client,
                &active_key,
                "mutation { consumeCredits(input: { amount: 1, description: \"bench\" }) { balance { balance } } }",
                json!({}),
            )
            .await;
        assert_eq!(data["consumeCredits"]["balance"]["balance"], 1_000_000_000 - n);
        sent.push((1_000_000_000 - n, t0, Instant::now()));
    }
    let elapsed = run.elapsed();
    tokio::time::timeout(Duration::from_secs(30), reader).await.expect("all events arrived").unwrap();
    let (mut from_request, mut from_response): (Vec<Duration>, Vec<Duration>) = {
        let arrivals = arrivals.lock().unwrap();
        sent.iter()
            .map(|(b, t0, t1)| (arrivals[b].saturating_duration_since(*t0), arrivals[b].saturating_duration_since(*t1)))
            .unzip()
    };
    from_request.sort();
    from_response.sort();
    let engine = if database_url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
    println!("engine: {engine}; {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!(
        "consume -> event ({consumes} sequential consumes, {:.0}/s): from request sent p50 {:?} p99 {:?} max {:?}; after the mutation's response p50 {:?} p99 {:?}",
        consumes as f64 / elapsed.as_secs_f64(),
        percentile(&from_request, 0.5),
        percentile(&from_request, 0.99),
        from_request.last().unwrap(),
        percentile(&from_response, 0.5),
        percentile(&from_response, 0.99),
    );
    println!(
        "idle subscribers: {idle} held; server RSS {} MiB -> {} MiB ({:.1} KiB per subscriber)",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / idle.max(1) as f64
    );
    drop(idle_sockets);

    // Throughput: many clients consuming from one organization at once (the hot row).
    let (workers, each) = (64, 50);
    let balance_before = 1_000_000_000 - consumes;
    let run = Instant::now();
    let results = futures::future::join_all((0..workers).map(|_| {
        let (client, server, key) = (client.clone(), &server, active_key.clone());
        async move {
            let mut seen = Vec::with_capacity(each);
            for _ in 0..each {
                let data = server.gql(&client, &key, "mutation { consumeCredits(input: { amount: 1, description: \"bench\" }) { transaction { balanceAfter } } }", json!({})).await;
                seen.push(data["consumeCredits"]["transaction"]["balanceAfter"].as_i64().expect("balanceAfter"));
            }
            seen
        }
    }))
    .await;
    let elapsed = run.elapsed();
    let mut after: Vec<i64> = results.into_iter().flatten().collect();
    after.sort_unstable();
    after.dedup();
    let total = (workers * each) as i64;
    assert_eq!(after.len() as i64, total, "every consume got its own balance");
    assert_eq!(after.first().copied(), Some(balance_before - total), "nothing lost or double-counted");
    let data = server.gql(&client, &active_key, "{ creditBalance { balance } }", json!({})).await;
    assert_eq!(data["creditBalance"]["balance"], balance_before - total);
    println!(
        "concurrent consumes on one organization: {workers} clients x {each}: {:.0} consumes/s, final balance exact",
        total as f64 / elapsed.as_secs_f64()
    );
}
