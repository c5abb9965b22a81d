//! The console, the elements and GraphiQL in real headless Chromium (Debian's, driven by
//! npm playwright-core from `tests/audit`): the server runs as its own process, so its
//! log can be searched for the tokens afterwards. The scenarios are in
//! `tests/audit/browser.mjs`; among them, an expiring grant and holds made over HTTP
//! while the console and an embedded `<credits-balance>` are open.

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
/// The grant the browser scenarios make with an expiry, and the hold they make after it.
const EXPIRING: i64 = 3_000;
const HOLD: i64 = 1_200;
/// How far ahead the expiring grant expires.
const EXPIRES_IN_DAYS: i64 = 10;
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

    // On a whole minute, so that the element shows it as given.
    let minute = chrono::Utc::now().timestamp() / 60 * 60 + 60;
    let expires_at = chrono::DateTime::from_timestamp(minute + EXPIRES_IN_DAYS * 86_400, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    // Relative to the package (`CREDITS_SCREENSHOTS=docs`), not to node's `tests/audit`.
    let screenshots = std::env::var("CREDITS_SCREENSHOTS")
        .ok()
        .map(|dir| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).display().to_string());
    let config = json!({
        "base": base,
        "embed": embed,
        "token": token,
        "apiKey": key,
        "adminToken": ADMIN_TOKEN,
        "organizationId": org,
        "balance": balance,
        "threshold": THRESHOLD,
        "expiringGrant": { "amount": EXPIRING, "expiresAt": expires_at },
        "hold": HOLD,
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
    // Read while the server runs (a failing request must not leave it running); checked below.
    let (_, after) = app
        .post(
            Some(&key),
            "{ creditBalance { held available balance nextExpiration { at amount } }
               creditHolds { totalCount edges { node { amount status } } } }",
            json!({}),
        )
        .await;
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser scenarios failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all browser scenarios passed"), "{stdout}\n{stderr}");

    // The holds the scenarios made were released, and nothing is held; the expiring grant
    // is still the next expiry, whole again but for the one credit the embedded element's
    // scenario consumed afterwards (consumption draws on the soonest expiry first).
    assert!(after.get("errors").is_none(), "{after}");
    let after = &after["data"];
    let balance = &after["creditBalance"];
    assert_eq!(balance["held"], 0, "{after}");
    assert_eq!(balance["available"], balance["balance"], "{after}");
    assert_eq!(balance["nextExpiration"]["amount"], EXPIRING - 1, "{after}");
    let at = balance["nextExpiration"]["at"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(at).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&expires_at).unwrap()
    );
    let holds = after["creditHolds"]["edges"].as_array().unwrap();
    assert_eq!(holds.len(), 2, "{after}");
    assert!(holds.iter().all(|edge| edge["node"]["status"] == "RELEASED"), "{after}");
    assert_eq!(holds[1]["node"]["amount"], HOLD, "the first hold, oldest last: {after}");

    // The server logged requests (at debug level), and never a token.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("/console"), "the server log is empty?\n{log}");
    for (what, secret) in [("session token", token.as_str()), ("API key", key.as_str()), ("admin token", ADMIN_TOKEN)] {
        assert!(!log.contains(secret), "the {what} appears in the server log");
    }
}
