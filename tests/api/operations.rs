//! Operations: `/metrics` (its token, its own address, every family from start-up,
//! Prometheus's own `promtool check metrics`, and counters that move by exactly what a
//! load did) and request ids on every response.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::credits;
use crate::helpers::{Engine, ServerProcess, TestApp};
use crate::on_both_engines;
use crate::ws_client::{TRANSPORT_WS, WsClient};

on_both_engines!(metrics_are_valid_and_move_by_what_the_load_did);

const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// Every family the contract names, and the process's own.
const FAMILIES: [&str; 18] = [
    "credits_http_requests_total",
    "credits_http_request_duration_seconds",
    "credits_graphql_errors_total",
    "credits_consumptions_total",
    "credits_ledger_batch_size",
    "credits_ledger_commit_duration_seconds",
    "credits_db_pool_connections",
    "credits_websocket_connections",
    "credits_subscriptions",
    "credits_rate_limited_total",
    "credits_stripe_events_total",
    "credits_webhook_deliveries_total",
    "credits_webhook_queue_depth",
    "credits_webhook_oldest_pending_seconds",
    "credits_topups_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

/// A scrape, as series (`name{a="1",b="2"}` with labels sorted) to values.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
            series.insert(normalize(key), value);
        }
        Self(series)
    }

    /// The value of one series (0 when absent), its labels in any order.
    fn get(&self, series: &str) -> f64 {
        self.0.get(&normalize(series)).copied().unwrap_or(0.0)
    }

    /// The sum over every series of `name` whose labels include `with`.
    fn sum(&self, name: &str, with: &str) -> f64 {
        self.0
            .iter()
            .filter(|(key, _)| key.split('{').next() == Some(name) && key.contains(with))
            .map(|(_, value)| value)
            .sum()
    }

    /// Whether a family has samples (a histogram's are `_bucket`, `_sum` and `_count`).
    fn has_family(&self, name: &str) -> bool {
        let histogram = [format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")];
        self.0
            .keys()
            .filter_map(|key| key.split('{').next())
            .any(|family| family == name || histogram.contains(&family.to_owned()))
    }
}

/// A series with its labels sorted.
fn normalize(series: &str) -> String {
    match series.split_once('{') {
        Some((name, labels)) => {
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            format!("{name}{{{}}}", labels.join(","))
        }
        None => series.to_owned(),
    }
}

async fn scrape(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, response.text().await.expect("body"))
}

/// Runs `promtool check metrics` on `text`: Prometheus's own judgement of the format.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(!crate::helpers::in_ci(), "promtool is missing (Debian package prometheus)");
        crate::helpers::skip_loudly("promtool is not installed: `promtool check metrics` skipped");
        return;
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn metrics_are_valid_and_move_by_what_the_load_did(engine: Engine) {
    let Some(database) = crate::helpers::database(engine).await else { return };
    let metrics_port = free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut server = ServerProcess::start(
        &database.url,
        &[("CREDITS_METRICS_TOKEN", METRICS_TOKEN), ("CREDITS_METRICS_ADDR", metrics_addr.as_str())],
    )
    .await;
    let app = TestApp::attach(&server.base, &database.url);
    let client = reqwest::Client::new();
    let main = format!("{}/metrics", server.base);
    let open = format!("http://{metrics_addr}/metrics");

    // The main address asks for the metrics token; the metrics address does not.
    assert_eq!(scrape(&client, &main, None).await.0, 401);
    assert_eq!(scrape(&client, &main, Some("metrics-token-wrong-0123456789")).await.0, 401);
    assert_eq!(scrape(&client, &main, Some(crate::helpers::ADMIN_TOKEN)).await.0, 401);
    let (status, content_type, text) = scrape(&client, &main, Some(METRICS_TOKEN)).await;
    assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
    let (status, _, _) = scrape(&client, &open, None).await;
    assert_eq!(status, 200);

    // Every family from start-up, valid for Prometheus, and no id in any label.
    let first = Scrape::parse(&text);
    for family in FAMILIES {
        assert!(first.has_family(family), "{family} missing:\n{text}");
    }
    promtool_accepts(&text);

    let (org, key) = app.funded_org("Metrics", 1_000).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    let changed = "subscription { creditBalanceChanged { balance } }";
    ws.subscribe(false, "live", changed, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Scrape::parse(&scrape(&client, &open, None).await.2);
    assert_eq!(before.get("credits_websocket_connections"), 1.0);
    assert_eq!(before.get(r#"credits_subscriptions{kind="creditBalanceChanged"}"#), 1.0);

    // The load: 20 consumes at once, one replayed, one conflicting, one refused for
    // credits, one refused as bad input; 24 requests to /graphql in all.
    let consume = "mutation($a: Credits!, $k: String) { consumeCredits(input: { amount: $a, description: \"m\", idempotencyKey: $k }) { replayed } }";
    let consumes = (0..20).map(|n| app.post(Some(&key), consume, json!({ "a": 10, "k": format!("k{n}") })));
    for (status, body) in futures::future::join_all(consumes).await {
        assert!(status == 200 && body.get("errors").is_none(), "{body}");
    }
    let replayed = app.ok(Some(&key), consume, json!({ "a": 10, "k": "k0" })).await;
    assert_eq!(replayed["consumeCredits"]["replayed"], true);
    app.fails(Some(&key), consume, json!({ "a": 11, "k": "k0" }), "IDEMPOTENCY_CONFLICT").await;
    app.fails(Some(&key), consume, json!({ "a": 1_000_000 }), "INSUFFICIENT_CREDITS").await;
    app.fails(Some(&key), consume, json!({ "a": 0 }), "BAD_USER_INPUT").await;
    let sent = 24.0;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let after = Scrape::parse(&scrape(&client, &main, Some(METRICS_TOKEN)).await.2);
    let moved = |series: &str| after.get(series) - before.get(series);
    assert_eq!(moved(r#"credits_consumptions_total{outcome="succeeded"}"#), 20.0);
    assert_eq!(moved(r#"credits_consumptions_total{outcome="replayed"}"#), 1.0);
    assert_eq!(moved(r#"credits_consumptions_total{outcome="conflict"}"#), 1.0);
    assert_eq!(moved(r#"credits_consumptions_total{outcome="insufficient_credits"}"#), 1.0);
    assert_eq!(moved(r#"credits_consumptions_total{outcome="failed"}"#), 1.0);
    assert_eq!(moved(r#"credits_graphql_errors_total{code="IDEMPOTENCY_CONFLICT"}"#), 1.0);
    assert_eq!(moved(r#"credits_graphql_errors_total{code="INSUFFICIENT_CREDITS"}"#), 1.0);
    assert_eq!(moved(r#"credits_graphql_errors_total{code="BAD_USER_INPUT"}"#), 1.0);
    let graphql = r#"route="/graphql""#;
    assert_eq!(
        after.sum("credits_http_requests_total", graphql) - before.sum("credits_http_requests_total", graphql),
        sent
    );
    let timed = r#"credits_http_request_duration_seconds_count{route="/graphql"}"#;
    assert_eq!(moved(timed), sent);
    // The 20 consumes, the conflict's and the refusal's batches: at least 20 requests
    // committed, in at most 22 batches.
    assert!(moved("credits_ledger_batch_size_sum") >= 20.0, "{after:?}");
    let batches = moved("credits_ledger_batch_size_count");
    assert!((1.0..=22.0).contains(&batches), "{batches} batches");
    assert_eq!(moved("credits_ledger_commit_duration_seconds_count"), batches);
    assert_eq!(after.get("credits_websocket_connections"), 0.0);
    assert_eq!(after.get(r#"credits_subscriptions{kind="creditBalanceChanged"}"#), 0.0);
    assert!(after.get("process_resident_memory_bytes") > 1_000_000.0);
    // No label carries an id: not the organization's, nor any other.
    let text = scrape(&client, &open, None).await.2;
    assert!(!text.contains(&org) && !text.contains("org_") && !text.contains("crk_"), "an id in a label");
    promtool_accepts(&text);
    server.kill();
}

/// Metrics are off unless asked for: `/metrics` is 404 without a metrics token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_served_without_a_token() {
    let Some(app) = crate::helpers::spawn_app(Engine::Sqlite).await else { return };
    let response = app.client.get(format!("{}/metrics", app.base)).send().await.expect("request");
    assert_eq!(response.status(), 404);
    let response =
        app.client.get(format!("{}/metrics", app.base)).bearer_auth(METRICS_TOKEN).send().await.expect("request");
    assert_eq!(response.status(), 404);
}

/// Every response carries `x-request-id`: the caller's when valid, else a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let Some(app) = crate::helpers::spawn_app(Engine::Sqlite).await else { return };
    let id_of = |response: &reqwest::Response| {
        response.headers().get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let send = |id: Option<&str>, path: &str| {
        let mut request = app.client.get(format!("{}{path}", app.base));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let kept = send(Some("trace-42.a_b-C"), "/healthz").await.expect("request");
    assert_eq!(id_of(&kept).as_deref(), Some("trace-42.a_b-C"));
    let long = "a".repeat(128);
    assert_eq!(id_of(&send(Some(&long), "/readyz").await.expect("request")).as_deref(), Some(long.as_str()));
    for invalid in ["has space", "a/b", "a:b", &"a".repeat(129), ""] {
        let response = send(Some(invalid), "/healthz").await.expect("request");
        let id = id_of(&response).expect("a new id");
        assert!(id != invalid && id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{invalid:?} → {id}");
    }
    // Absent: a new one each time, on any route and status (a 404 and GraphQL too).
    let first = id_of(&send(None, "/no-such-page").await.expect("request")).expect("id");
    let second = id_of(&send(None, "/no-such-page").await.expect("request")).expect("id");
    assert_ne!(first, second);
    let graphql = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .expect("request");
    assert!(id_of(&graphql).is_some());
}

/// An organization whose books have every kind of row: lots of several categories, one
/// expiring, one voided, overdraft debt, holds active, captured and released.
async fn busy_books(app: &TestApp) -> (String, String) {
    let admin = Some(crate::helpers::ADMIN_TOKEN);
    let (org, key) = app.funded_org("Books", 1_000).await;
    let grant = "mutation($o: ID!, $a: Credits!, $c: CreditCategory, $e: DateTime) { grantCredits(input: { organizationId: $o, amount: $a, description: \"g\", category: $c, expiresAt: $e }) { transaction { allocations { lot { id } } } } }";
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1_500)).to_rfc3339();
    app.ok(admin, grant, json!({ "o": org, "a": 300, "c": "PROMOTIONAL", "e": soon })).await;
    let voided = app.ok(admin, grant, json!({ "o": org, "a": 200, "c": "PAID" })).await;
    let lot = voided["grantCredits"]["transaction"]["allocations"][0]["lot"]["id"].as_str().expect("lot").to_owned();
    app.ok(
        admin,
        "mutation($l: ID!) { voidCreditLot(id: $l, description: \"v\") { __typename } }",
        json!({ "l": lot }),
    )
    .await;
    app.ok(
        admin,
        "mutation($o: ID!) { setOverdraftLimit(organizationId: $o, limit: 50) { balance } }",
        json!({ "o": org }),
    )
    .await;
    let hold = "mutation($a: Credits!) { createHold(input: { amount: $a, description: \"h\" }) { hold { id } } }";
    let mut holds = Vec::new();
    for amount in [40, 30, 20, 10] {
        let created = app.ok(Some(&key), hold, json!({ "a": amount })).await;
        holds.push(created["createHold"]["hold"]["id"].as_str().expect("hold").to_owned());
    }
    let capture = "mutation($h: ID!, $a: Credits) { captureHold(input: { id: $h, amount: $a }) { __typename } }";
    app.ok(Some(&key), capture, json!({ "h": holds[0], "a": 25 })).await;
    app.ok(Some(&key), capture, json!({ "h": holds[1] })).await;
    app.ok(Some(&key), "mutation($h: ID!) { releaseHold(id: $h) { status } }", json!({ "h": holds[2] })).await;
    (org, key)
}

/// `credits backup` while consumes run: a server starts on the copy, and `credits verify`
/// passes on the copy and on the original (after the load, into overdraft, with the
/// expiry written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_serves_and_verifies() {
    let Some(database) = crate::helpers::database(Engine::Sqlite).await else { return };
    let mut server = ServerProcess::start(&database.url, &[]).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (_, key) = busy_books(&app).await;
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("copy.db");

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let consume = "mutation { consumeCredits(input: { amount: 1, description: \"load\" }) { replayed } }";
    let load = (0..4).map(|_| {
        let (app, key, running) = (&app, &key, running.clone());
        async move {
            let mut done = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = app.post(Some(key), consume, json!({})).await;
                assert_eq!(status, 200);
                done += 1;
            }
            done
        }
    });
    let backup = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (url, out) = (database.url.clone(), copy.to_str().expect("utf-8").to_owned());
        let output =
            tokio::task::spawn_blocking(move || credits(&url, &["backup", "--out", &out])).await.expect("join");
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        output
    };
    let (done, output) = tokio::join!(futures::future::join_all(load), backup);
    assert!(output.status.success(), "backup: {}", String::from_utf8_lossy(&output.stderr));
    assert!(done.iter().sum::<i32>() > 20, "consumes ran during the backup: {done:?}");
    // Into the overdraft, and past the expiry (written): then both copies verify.
    let left = app.balance(&key).await;
    let into_debt = "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"debt\" }) { balance { balance } } }";
    app.ok(Some(&key), into_debt, json!({ "a": left + 20 })).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let balance = app.balance(&key).await;
    assert!(balance < 0, "in the overdraft: {balance}");
    let verified = credits(&database.url, &["verify"]);
    assert!(verified.status.success(), "verify: {}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("ok: "), "{verified:?}");

    let copy_url = format!("sqlite://{}?mode=rwc", copy.display());
    let verified = credits(&copy_url, &["verify"]);
    assert!(verified.status.success(), "verify the copy: {}", String::from_utf8_lossy(&verified.stderr));
    let mut restored = ServerProcess::start(&copy_url, &[]).await;
    let on_copy = TestApp::attach(&restored.base, &copy_url);
    let copied = on_copy.balance(&key).await;
    assert!(copied >= balance, "the copy is an earlier state: {copied} ≥ {balance}");
    restored.kill();
    server.kill();

    // Never over an existing file; on PostgreSQL, pg_dump.
    let again = credits(&database.url, &["backup", "--out", copy.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"), "{again:?}");
    let postgres = credits("postgres://nowhere/credits", &["backup", "--out", "/tmp/never.db"]);
    assert!(
        !postgres.status.success() && String::from_utf8_lossy(&postgres.stderr).contains("pg_dump"),
        "{postgres:?}"
    );
}

on_both_engines!(verify_names_the_first_organization_whose_books_are_broken);

async fn verify_names_the_first_organization_whose_books_are_broken(engine: Engine) {
    use sea_orm::ConnectionTrait;
    let Some(app) = crate::helpers::spawn_app(engine).await else { return };
    let (org, key) = busy_books(&app).await;
    // Past the expiry, and it written, so that nothing changes while `verify` reads.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let consume = "mutation { consumeCredits(input: { amount: 5, description: \"after\" }) { replayed } }";
    app.ok(Some(&key), consume, json!({})).await;
    let verified = credits(&app.database_url(), &["--json", "verify"]);
    assert!(verified.status.success(), "verify: {}", String::from_utf8_lossy(&verified.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("JSON");
    assert_eq!(answer["ok"], true);
    assert!(answer["transactions"].as_u64() > Some(5));

    let db = sea_orm::Database::connect(app.database_url()).await.expect("connect");
    // A lot with room both ways, so the schema's own checks let the break through.
    let lot = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id FROM credit_lots WHERE organization_id = '{org}' AND held = 0 AND remaining > 1 AND remaining < original"),
        ))
        .await
        .expect("query")
        .expect("such a lot")
        .try_get::<String>("", "id")
        .expect("id");
    let balance = format!("UPDATE credit_balances SET balance = balance {{}} 1 WHERE organization_id = '{org}'");
    let remaining = format!("UPDATE credit_lots SET remaining = remaining {{}} 1 WHERE id = '{lot}'");
    let breakages = [
        (balance.replace("{}", "+"), "balance"),
        (balance.replace("{}", "-"), ""),
        (remaining.replace("{}", "-"), lot.as_str()),
        (remaining.replace("{}", "+"), ""),
        (format!("UPDATE credit_balances SET held = held + 5 WHERE organization_id = '{org}'"), "held"),
    ];
    for (statement, broken) in breakages {
        db.execute_unprepared(&statement).await.expect("break the books by hand");
        let verified = credits(&app.database_url(), &["verify"]);
        let stderr = String::from_utf8_lossy(&verified.stderr);
        if broken.is_empty() {
            assert!(verified.status.success(), "mended: {stderr}");
        } else {
            assert!(!verified.status.success(), "{statement}: verify passed");
            assert!(stderr.contains(&org) && stderr.contains(broken), "{statement}: {stderr}");
        }
    }
}

/// Bodies received, each with its content type.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A local OpenTelemetry collector: every body POSTed to `/v1/traces`, with its content type.
struct Collector {
    base: String,
    received: Received,
}

impl Collector {
    async fn start() -> Self {
        use axum::routing::post;
        let received = Received::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    store.lock().unwrap().push((kind, body.to_vec()));
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, received }
    }

    /// Every span received as JSON, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Value)> {
        let mut spans = Vec::new();
        for (_, body) in self.received.lock().unwrap().iter() {
            let Ok(export) = serde_json::from_slice::<Value>(body) else { continue };
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                let service = resource["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|attribute| attribute["key"] == "service.name")
                    .and_then(|attribute| attribute["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT`, one consume's spans reach the collector under the
/// caller's `traceparent`: request → GraphQL operation → ledger commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_is_traced_under_the_callers_traceparent() {
    let Some(database) = crate::helpers::database(Engine::Sqlite).await else { return };
    let collector = Collector::start().await;
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_SERVICE_NAME", "credits-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut server = ServerProcess::start(&database.url, &otlp).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (_, key) = app.funded_org("Traced", 100).await;
    let (trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&json!({ "query": "mutation Spend { consumeCredits(input: { amount: 5, description: \"traced\" }) { replayed } }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    let started = std::time::Instant::now();
    let ours = loop {
        let ours: Vec<(String, Value)> =
            collector.spans().into_iter().filter(|(_, span)| span["traceId"].as_str() == Some(trace)).collect();
        if ours.iter().any(|(_, span)| span["name"] == "ledger.commit") {
            break ours;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let received = collector.received.lock().unwrap().clone();
            let sample: Vec<String> = received
                .iter()
                .map(|(kind, body)| format!("{kind}: {}", String::from_utf8_lossy(&body[..body.len().min(1500)])))
                .collect();
            panic!("spans of the trace: {ours:?}; received {} bodies: {sample:?}\n{}", received.len(), server.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let named = |name: &str| {
        ours.iter().find(|(_, span)| span["name"] == name).map(|(_, span)| span.clone()).unwrap_or_else(|| {
            panic!("no {name} span in {:?}", ours.iter().map(|(_, span)| span["name"].clone()).collect::<Vec<_>>())
        })
    };
    let request = named("POST /graphql");
    let operation = named("mutation Spend");
    let commit = named("ledger.commit");
    assert_eq!(request["parentSpanId"], caller_span, "a child of the caller's span");
    assert_eq!(operation["parentSpanId"], request["spanId"]);
    // The commit inside the operation (through whatever spans the ledger's own are).
    let mut chain = vec![commit["name"].as_str().unwrap_or_default().to_owned()];
    let mut parent = commit["parentSpanId"].clone();
    while parent != operation["spanId"] {
        let Some((_, up)) = ours.iter().find(|(_, span)| span["spanId"] == parent) else {
            panic!("ledger.commit is not under the operation: {chain:?} then {parent}");
        };
        chain.push(up["name"].as_str().unwrap_or_default().to_owned());
        parent = up["parentSpanId"].clone();
    }
    assert!(chain.len() <= 3, "{chain:?}");
    assert!(ours.iter().all(|(service, _)| service == "credits-test"));
    server.kill();

    // The default protocol is protobuf.
    let protobuf = Collector::start().await;
    let otlp = [("OTEL_EXPORTER_OTLP_ENDPOINT", protobuf.base.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut server = ServerProcess::start(&database.url, &otlp).await;
    let started = std::time::Instant::now();
    while protobuf.received.lock().unwrap().is_empty() {
        TestApp::attach(&server.base, &database.url).balance(&key).await;
        assert!(started.elapsed() < Duration::from_secs(15), "nothing exported over protobuf");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (kind, body) = protobuf.received.lock().unwrap()[0].clone();
    assert_eq!(kind, "application/x-protobuf");
    assert!(!body.is_empty());
    server.kill();
}
