//! The console, the elements and GraphiQL in real headless Chromium (Debian's, driven by
//! npm playwright-core from `tests/audit`): the server runs as its own process, so its
//! log can be searched for the tokens afterwards. The scenarios are in
//! `tests/audit/browser.mjs`.

use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::json;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, chromium, database, node_tool, wait_until_ready};

const WEBHOOK_SECRET: &str = "whsec_browser_secret";
/// Credits granted to the seeded organization, and its low-balance threshold.
const GRANTED: i64 = 5_000;
const THRESHOLD: i64 = 1_000;
const USAGE: [(&str, i64); 12] = [
    ("Image generation", 120),
    ("Text analysis", 35),
    ("Image generation", 120),
    ("Speech to text", 60),
    ("Text analysis", 35),
    ("Image generation", 120),
    ("Embeddings", 12),
    ("Text analysis", 35),
    ("Image generation", 120),
    ("Speech to text", 60),
    ("Text analysis", 35),
    ("Image generation", 120),
];

/// A second origin: a shop page embedding `<credits-balance>` from the server.
async fn embedding_origin(listener: tokio::net::TcpListener, server: String) {
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<script>window.balanceEvents = 0; document.addEventListener("credits:balance", () => window.balanceEvents++);</script>
<script type="module" src="{server}/elements.js"></script></head>
<body><h1>A shop on another origin</h1>
<credits-balance data-needs-token endpoint="{server}/graphql"></credits-balance></body></html>"#
    );
    let app = Router::new().route("/embed.html", get(move || async move { Html(page) }));
    let _ = axum::serve(listener, app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_elements_and_graphiql_work_in_headless_chromium() {
    let Some(audit_dir) = node_tool("playwright-core") else { return };
    let Some(chromium) = chromium() else { return };
    let Some(db) = database(Engine::Sqlite).await else { return };
    let fake = FakeStripe::start().await;
    let embed_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let embed = format!("http://{}", embed_listener.local_addr().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    tokio::spawn(embedding_origin(embed_listener, base.clone()));

    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_credits"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("CREDITS_ADDR", format!("127.0.0.1:{port}"))
        .env("CREDITS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CREDITS_CORS_ORIGINS", &embed)
        .env("STRIPE_SECRET_KEY", "sk_test_browser_key")
        .env("STRIPE_API_BASE", &fake.base)
        .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        // As chatty as it gets, so that a token logged anywhere is found below.
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the credits server");
    let app = TestApp::attach_owning(base.clone(), db);
    wait_until_ready(&app.client, &base).await;

    // A seeded organization: a grant, a dozen uses, a threshold, a browser session.
    let org = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($t: Credits) { createOrganization(input: { name: \"Acme Robotics\", lowBalanceThreshold: $t }) { id } }",
            json!({ "t": THRESHOLD }),
        )
        .await["createOrganization"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = app.create_key(&org).await;
    app.grant(&org, GRANTED).await;
    for (description, amount) in USAGE {
        app.ok(
            Some(&key),
            "mutation($a: Credits!, $d: String!) { consumeCredits(input: { amount: $a, description: $d, referenceType: \"job\" }) { balance { balance } } }",
            json!({ "a": amount, "d": description }),
        )
        .await;
    }
    let balance = app.balance(&key).await;
    let session = app.ok(Some(&key), "mutation { createClientSession(input: {}) { token } }", json!({})).await;
    let token = session["createClientSession"]["token"].as_str().unwrap().to_owned();

    let screenshots = std::env::var("CREDITS_SCREENSHOTS").ok();
    let config = json!({
        "base": base,
        "embed": embed,
        "token": token,
        "apiKey": key,
        "adminToken": ADMIN_TOKEN,
        "organizationId": org,
        "balance": balance,
        "threshold": THRESHOLD,
        "webhookSecret": WEBHOOK_SECRET,
        "fixtures": concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/stripe.json"),
        "screenshots": screenshots,
    });
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(audit_dir)
            .arg("browser.mjs")
            .env("CREDITS_BROWSER", config.to_string())
            .env("CHROMIUM", chromium)
            .stdin(Stdio::null())
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser scenarios failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all browser scenarios passed"), "{stdout}\n{stderr}");

    // The server logged requests (at debug level), and never a token.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("/console"), "the server log is empty?\n{log}");
    for (what, secret) in [("session token", token.as_str()), ("API key", key.as_str()), ("admin token", ADMIN_TOKEN)] {
        assert!(!log.contains(secret), "the {what} appears in the server log");
    }
}
