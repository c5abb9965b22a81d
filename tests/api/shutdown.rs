//! SIGTERM on the real binary: it stops accepting at once, finishes the request in
//! flight, closes every WebSocket with 1001 (going away) and exits 0.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Engine, ServerProcess, TestApp, database};
use crate::on_both_engines;
use crate::ws_client::{TRANSPORT_WS, WsClient};

on_both_engines!(sigterm_drains_requests_closes_sockets_with_1001_and_exits_zero);

const CHANGED: &str = "subscription { creditBalanceChanged { balance } }";
const SOCKETS: usize = 4;

async fn sigterm_drains_requests_closes_sockets_with_1001_and_exits_zero(engine: Engine) {
    let Some(database) = database(engine).await else { return };
    let mut server = ServerProcess::start(&database.url, &[]).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (_, key) = app.funded_org("Shutdown", 100).await;

    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut ws = WsClient::connect(&server.base, TRANSPORT_WS, &key).await;
        ws.subscribe(false, "changed", CHANGED, json!({})).await;
        sockets.push(ws);
    }
    // Every subscription is live: one change reaches all of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.ok(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 1, description: \"before\" }) { replayed } }",
        json!({}),
    )
    .await;
    for ws in &mut sockets {
        let event = ws.message().await;
        assert_eq!(event["payload"]["data"]["creditBalanceChanged"]["balance"], 99, "{event}");
    }

    // A request in flight: headers sent, half its body still to come.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = json!({ "query": "mutation { consumeCredits(input: { amount: 2, description: \"in flight\" }) { balance { balance } } }" })
        .to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    );
    slow.write_all(request.as_bytes()).await.expect("send head");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    for ws in &mut sockets {
        assert_eq!(ws.closed().await, 1001, "every WebSocket is closed as going away");
    }
    // No new connections, even while the request in flight holds the process up.
    let refused = async {
        loop {
            match tokio::net::TcpStream::connect(&addr).await {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), refused).await.expect("new connections refused after SIGTERM");
    assert!(
        server.wait_exit(Duration::from_millis(200)).await.is_none(),
        "the process waits for the request in flight"
    );

    // The request in flight completes normally.
    slow.write_all(tail.as_bytes()).await.expect("send the rest of the body");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut response))
        .await
        .expect("the in-flight request is answered")
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"balance\":97"), "{response}");

    let status = server
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM:\n{}", signalled.elapsed(), server.log()));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM:\n{}", server.log());
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "nothing listens after exit");
}
