//! The console, the elements and GraphiQL in real headless Chromium (Debian's, driven by
//! npm playwright-core from `tests/audit`): the server runs as its own process, so its
//! log can be searched for the tokens afterwards. The scenarios are in
//! `tests/audit/browser.mjs`; among them, an expiring grant and holds made over HTTP
//! while the console and an embedded `<credits-balance>` are open. The usage chart and
//! the CSV export have theirs in `tests/audit/usage.mjs`, over a month of consumes the
//! ledger's clock spread out; auto top-up in the console has `tests/audit/topup.mjs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use credits::ledger::{Amount, Clock, ConsumeRequest, GrantRequest, Ledger};
use serde_json::{Value, json};

use crate::fake_stripe::{Card, FakeStripe};
use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, chromium, database, node_tool, spawn_app_with, wait_until_ready};
use crate::purchases::{WEBHOOK_SECRET as STRIPE_APP_WEBHOOK_SECRET, stripe_app};

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

/// A second origin: a shop page embedding `<credits-balance>` from the server, and one
/// embedding `<credits-usage days="30">`.
async fn embedding_origin(listener: tokio::net::TcpListener, server: String) {
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<script>window.balanceEvents = 0; document.addEventListener("credits:balance", () => window.balanceEvents++);</script>
<script type="module" src="{server}/elements.js"></script></head>
<body><h1>A shop on another origin</h1>
<credits-balance data-needs-token endpoint="{server}/graphql"></credits-balance></body></html>"#
    );
    let usage = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Usage</title>
<script type="module" src="{server}/elements.js"></script></head>
<body><h1>Where the credits went</h1>
<credits-usage days="30" data-needs-token endpoint="{server}/graphql"></credits-usage></body></html>"#
    );
    let app = Router::new()
        .route("/embed.html", get(move || async move { Html(page) }))
        .route("/usage.html", get(move || async move { Html(usage) }));
    let _ = axum::serve(listener, app).await;
}

/// Where the scenarios save screenshots (`CREDITS_SCREENSHOTS=docs`), relative to the
/// package, not to node's `tests/audit`.
fn screenshots() -> Option<String> {
    std::env::var("CREDITS_SCREENSHOTS")
        .ok()
        .map(|dir| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).display().to_string())
}

/// Runs `script` (in `tests/audit`) in node with `config` as `CREDITS_BROWSER`; check what
/// it printed with [`passed`].
async fn run_scenarios(audit_dir: &'static str, chromium: PathBuf, script: &'static str, config: Value) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(audit_dir)
            .arg(script)
            .env("CREDITS_BROWSER", config.to_string())
            .env("CHROMIUM", chromium)
            .stdin(Stdio::null())
            .output()
            .expect("run node")
    })
    .await
    .unwrap()
}

/// Asserts that every scenario of a run passed.
fn passed(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser scenarios failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all browser scenarios passed"), "{stdout}\n{stderr}");
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
        "screenshots": screenshots(),
    });
    let output = run_scenarios(audit_dir, chromium, "browser.mjs", config).await;
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
    passed(&output);

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

/// The zone the usage chart's browser runs in: far from UTC, on a half hour, and without
/// daylight saving, so that a fixed offset finds its midnights here.
const USAGE_ZONE: &str = "Australia/Darwin";
const USAGE_ZONE_OFFSET_SECONDS: i32 = 9 * 3600 + 1800;
/// The days `<credits-usage days="30">` draws, today included.
const USAGE_DAYS: i64 = 30;

/// An entry the seeded organization's ledger makes on its own clock.
enum Seed {
    Grant(i64),
    Consume(i64, Option<&'static str>),
}

/// The seeded organization's ledger, oldest first: days before today (in `USAGE_ZONE`),
/// minutes after that day's midnight, the entry.
const SEEDED: [(i64, i64, Seed); 14] = [
    (60, 0, Seed::Grant(10_000)),
    (44, 600, Seed::Consume(70, Some("ai_image"))), // before the chart's days
    (30, 1_435, Seed::Consume(11, Some("ai_text"))), // five minutes before them
    (29, 5, Seed::Consume(13, Some("ai_image"))),   // their first minutes: the day before, in UTC
    (29, 1_000, Seed::Consume(17, None)),
    (16, 720, Seed::Consume(40, Some("ai_text"))),
    (9, 30, Seed::Consume(25, Some("ai_image"))),
    (9, 31, Seed::Consume(8, Some("ai_text"))),
    (9, 32, Seed::Consume(3, None)),
    (5, 1_439, Seed::Consume(9, None)), // a day's last minute
    (3, 600, Seed::Grant(500)),         // added, never drawn as consumed
    (2, 300, Seed::Consume(31, Some("ai_image"))),
    (1, 1_439, Seed::Consume(6, Some("ai_text"))),
    (0, 1, Seed::Consume(4, Some("ai_image"))),
];
/// Today, over the API on the real clock: a hold of `HELD` captured in part (consumed
/// under its reference type), and a consume without one.
const HELD: i64 = 20;
const CAPTURED: i64 = 15;
const CONSUMED_NOW: i64 = 12;

/// Credits consumed per day (`2026-12-01`): the day's total and its reference types ("" for none).
type Consumed = BTreeMap<String, (i64, BTreeMap<String, i64>)>;

fn note(consumed: &mut Consumed, day: String, amount: i64, reference: Option<&str>) {
    let (total, groups) = consumed.entry(day).or_default();
    *total += amount;
    *groups.entry(reference.unwrap_or_default().to_owned()).or_default() += amount;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_chart_draws_credit_usage_and_the_console_exports_csv_with_the_token_in_a_header() {
    let Some(audit_dir) = node_tool("playwright-core") else { return };
    let Some(chromium) = chromium() else { return };
    let embed_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let embed = format!("http://{}", embed_listener.local_addr().unwrap());
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_CORS_ORIGINS", &embed)]).await else { return };
    tokio::spawn(embedding_origin(embed_listener, app.base.clone()));
    let (org, key) = app.funded_org("Usage Labs", 0).await;

    // The chart's days: the last 30 of the zone's calendar, today included.
    let zone = FixedOffset::east_opt(USAGE_ZONE_OFFSET_SECONDS).unwrap();
    let now = Utc::now();
    let midnight = |days_ago: i64| -> DateTime<Utc> {
        let day = now.with_timezone(&zone).date_naive() - chrono::Duration::days(days_ago);
        day.and_time(NaiveTime::MIN).and_local_timezone(zone).single().unwrap().with_timezone(&Utc)
    };
    let day_of = |at: DateTime<Utc>| at.with_timezone(&zone).date_naive().to_string();
    let (from, to) = (midnight(USAGE_DAYS - 1), midnight(-1));
    let dates: Vec<String> = (0..USAGE_DAYS).rev().map(|days_ago| day_of(midnight(days_ago))).collect();

    // The month behind us, on the ledger's clock moved by hand (the server's ledger reads
    // the same database).
    let clock = Arc::new(Mutex::new(midnight(60)));
    let read = clock.clone();
    let db = credits::db::connect(&app.database_url()).await.expect("connect");
    let ledger = Ledger::new(db).with_clock(Clock::from_fn(move || *read.lock().unwrap()));
    let mut consumed = Consumed::new();
    for (days_ago, minutes, seed) in &SEEDED {
        let at = midnight(*days_ago) + chrono::Duration::minutes(*minutes);
        if at >= now {
            continue; // today's first minute, not come yet
        }
        *clock.lock().unwrap() = at;
        match *seed {
            Seed::Grant(amount) => {
                let grant = GrantRequest::new(org.clone(), Amount::parse(amount).unwrap(), "Top-up".into(), None);
                ledger.grant(grant.unwrap()).await.expect("grant");
            }
            Seed::Consume(amount, reference) => {
                let description = format!("Job of {}", day_of(at));
                let consume = ConsumeRequest::new(
                    org.clone(),
                    Amount::parse(amount).unwrap(),
                    description,
                    reference.map(Into::into),
                    None,
                    None,
                );
                ledger.consume(consume.unwrap()).await.expect("consume");
                if (from..to).contains(&at) {
                    note(&mut consumed, day_of(at), amount, reference);
                }
            }
        }
    }
    // Today, over the API.
    let hold = app
        .ok(
            Some(&key),
            "mutation($a: Credits!) { createHold(input: { amount: $a, description: \"Video\", referenceType: \"ai_video\" }) { hold { id } } }",
            json!({ "a": HELD }),
        )
        .await["createHold"]["hold"]["id"]
        .clone();
    app.ok(
        Some(&key),
        "mutation($id: ID!, $a: Credits) { captureHold(input: { id: $id, amount: $a }) { hold { status } } }",
        json!({ "id": hold, "a": CAPTURED }),
    )
    .await;
    app.ok(
        Some(&key),
        "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"Now\" }) { balance { balance } } }",
        json!({ "a": CONSUMED_NOW }),
    )
    .await;
    note(&mut consumed, day_of(now), CAPTURED, Some("ai_video"));
    note(&mut consumed, day_of(now), CONSUMED_NOW, None);
    let session = app.ok(Some(&key), "mutation { createClientSession(input: {}) { token } }", json!({})).await;
    let token = session["createClientSession"]["token"].as_str().unwrap().to_owned();

    let expected: serde_json::Map<String, Value> =
        consumed.into_iter().map(|(day, (total, groups))| (day, json!({ "total": total, "groups": groups }))).collect();
    let config = json!({
        "base": app.base,
        "embed": embed,
        "token": token,
        "apiKey": key,
        "adminToken": ADMIN_TOKEN,
        "timeZone": USAGE_ZONE,
        "range": { "from": from.to_rfc3339(), "to": to.to_rfc3339() },
        "dates": dates,
        "expected": expected,
        "screenshots": screenshots(),
    });
    passed(&run_scenarios(audit_dir, chromium, "usage.mjs", config).await);
}

/// Credits the organization of the auto top-up scenarios starts with (no card, no
/// low-balance threshold).
const AUTO_TOP_UP_FUNDED: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_purchase_session_saves_a_card_and_switches_auto_top_up_on_and_off_in_the_console() {
    let Some(audit_dir) = node_tool("playwright-core") else { return };
    let Some(chromium) = chromium() else { return };
    let Some((app, fake)) = stripe_app(Engine::Sqlite).await else { return };
    // The top-up the last scenario starts is declined, which pauses auto top-up.
    fake.card(Card::Declines);
    let (org, key) = app.funded_org("Auto Labs", AUTO_TOP_UP_FUNDED).await;
    let session = app
        .ok(Some(&key), "mutation { createClientSession(input: { scopes: [READ, PURCHASE] }) { token } }", json!({}))
        .await;
    let token = session["createClientSession"]["token"].as_str().unwrap().to_owned();
    let config = json!({
        "base": app.base,
        "token": token,
        "apiKey": key,
        "adminToken": ADMIN_TOKEN,
        "organizationId": org,
        "webhookSecret": STRIPE_APP_WEBHOOK_SECRET,
        "fixtures": concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/stripe.json"),
        "screenshots": screenshots(),
    });
    passed(&run_scenarios(audit_dir, chromium, "topup.mjs", config).await);

    // The one Checkout the console started asked Stripe to keep the card, for the
    // organization's Customer; the webhook the scenario signed said what it was sent.
    let checkouts: Vec<_> = fake.calls().into_iter().filter(|call| call.field("mode") == Some("payment")).collect();
    assert_eq!(checkouts.len(), 1);
    let checkout = &checkouts[0];
    assert!(checkout.field("customer").is_some_and(|customer| customer.starts_with("cus_")));
    assert_eq!(checkout.field("payment_intent_data[setup_future_usage]"), Some("off_session"));
    assert_eq!(checkout.field("metadata[save_for_auto_top_up]"), Some("true"));
    // One off-session payment (declined); auto top-up left off, the card kept.
    assert_eq!(fake.payment_intents().len(), 1);
    let data = app
        .ok(
            Some(ADMIN_TOKEN),
            "query($o: ID!) { organization(id: $o) { autoTopUp { enabled pausedReason topUpsThisMonth paymentMethod { last4 } } } }",
            json!({ "o": org }),
        )
        .await;
    assert_eq!(
        data["organization"]["autoTopUp"],
        json!({ "enabled": false, "pausedReason": null, "topUpsThisMonth": 1, "paymentMethod": { "last4": "4242" } })
    );
}
