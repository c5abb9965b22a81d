//! Throughput benchmark: how close `credits` comes to the bare GraphQL limit of this
//! machine. A load generator, not a test: every answer's body is checked, and the ledger
//! is verified afterwards.
//!
//! ```sh
//! cargo build --release --bins --examples && cargo run --release --example bench_throughput -- [SECONDS]
//! ```
//! In one run, on one machine:
//! 1. the limit: `examples/bare_graphql.rs`, async-graphql-axum answering the same
//!    `consumeCredits` mutation from memory, no database, driven like everything else,
//!    half its window before the scenarios and half after (the shares are of both);
//! 2. `credits` with `CREDITS_RATE_LIMIT=off` on a fresh SQLite file and on a throw-away
//!    PostgreSQL cluster with production durability (fsync and synchronous commit on):
//!    one hot organization consuming from 64 connections, then the same with an
//!    idempotency key on each request (`BENCH_ONLY=hot` runs these alone); `creditBalance` reads from 64
//!    connections while 8 more consume; the same reads alone and the read anchor's
//!    (`bare_graphql` answering them with one sqlx `SELECT` per request on the same
//!    database), in rounds taken in turn (`BENCH_ONLY=reads` runs these two alone); consumes spread over
//!    1,000 organizations (`BENCH_ONLY=organizations` runs this alone), then 10,000;
//!    and the cost of credit lots: rounds of 64 simultaneous consumes of 3 credits that
//!    each draw from 2 lots (of 2 credits) or 3 lots (of 1 credit), against the same
//!    rounds drawing from a single lot, the three taken in turn round by round (the
//!    top-ups between rounds are not timed);
//!    and outgoing webhooks: a storm of grants (each one event) with no endpoint and
//!    the same storm with one endpoint subscribed to every type, answered by a local
//!    receiver in this process, two rounds of each in turn (each round's events let
//!    arrive before the next): grants per second with and without, events delivered
//!    per second, and the delay from each event's commit to its delivery;
//! 3. the ledger afterwards: every balance equals the sum of its transactions, none is
//!    negative, and every acknowledged consume is exactly one transaction.
//!
//! Each result is printed with its ratio to the limit, latency, errors and server memory.
//! `BENCH_ONLY=metrics` instead measures the price of `/metrics`: the hot-organization
//! and read rows on a server without metrics and on one with them (scraped every second).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/api/support/pg_cluster.rs"]
mod pg_cluster;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::load::{self, Report};
use common::{Server, ms};
use futures::StreamExt;
use pg_cluster::{Durability, PgSetup};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

const CONNECTIONS: usize = 64;
const CONSUME: &str = "mutation($i: ConsumeCreditsInput!) { consumeCredits(input: $i) { transaction { id balanceAfter } balance { balance } replayed } }";
const READ: &str = "{ creditBalance { balance } }";

/// A throw-away PostgreSQL cluster, stopped and deleted when dropped.
struct Postgres {
    setup: PgSetup,
    server: Child,
}

impl Postgres {
    fn start() -> Result<Self, String> {
        let setup = PgSetup::init("bench")?;
        let script = format!("exec {}", setup.server_command(Durability::Production));
        let server = setup
            .run_as(std::path::Path::new("sh"))
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        setup.wait_ready(Duration::from_secs(30))?;
        Ok(Self { setup, server })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.setup.stop_immediately();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.setup.dir);
    }
}

/// One line of the report.
struct Row {
    scenario: String,
    report: Report,
    rss_mib: u64,
}

impl Row {
    /// `scenario`'s `report`, with `server`'s memory now.
    fn measured(scenario: String, report: Report, server: &Server) -> Self {
        Self { scenario, report, rss_mib: server.rss_kib() / 1024 }
    }
}

fn consume_body(amount: i64) -> String {
    json!({ "query": CONSUME, "variables": { "i": { "amount": amount, "description": "bench" } } }).to_string()
}

/// A consume of 1 credit under an idempotency key of its own (`n`: the request's number
/// in its run; this row runs once a server, so no key is used twice).
fn keyed_consume_body(n: u64) -> String {
    let input = json!({ "amount": 1, "description": "bench", "idempotencyKey": format!("bench-{n}") });
    json!({ "query": CONSUME, "variables": { "i": input } }).to_string()
}

/// A checker for consume answers that keeps each acknowledged transaction id.
fn consume_check(acknowledged: &Arc<Mutex<Vec<String>>>) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    let acknowledged = acknowledged.clone();
    Arc::new(move |body: &str| {
        let Ok(value) = serde_json::from_str::<Value>(body) else { return false };
        let transaction = &value["data"]["consumeCredits"]["transaction"];
        match (transaction["id"].as_str(), transaction["balanceAfter"].as_i64()) {
            (Some(id), Some(after)) if value.get("errors").is_none() && after >= 0 => {
                acknowledged.lock().unwrap().push(id.to_owned());
                true
            }
            _ => false,
        }
    })
}

fn read_check() -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    Arc::new(|body: &str| body.starts_with("{\"data\":{\"creditBalance\":{\"balance\":") && !body.contains("errors"))
}

/// The bare server's limit for the consume mutation.
async fn measure_limit(seconds: u64) -> Report {
    let check: Arc<dyn Fn(&str) -> bool + Send + Sync> =
        Arc::new(|body: &str| body.contains("\"balanceAfter\"") && !body.contains("errors"));
    run_bare(&[], &consume_body(1), check, seconds).await
}

/// `examples/bare_graphql.rs` started with `args`, loaded with `body` from 64
/// connections for `seconds`.
async fn run_bare(args: &[&str], body: &str, check: Arc<dyn Fn(&str) -> bool + Send + Sync>, seconds: u64) -> Report {
    Bare::start(args).await.load(body, check, Duration::from_secs(seconds)).await
}

/// A running `examples/bare_graphql.rs`, stopped when dropped.
struct Bare {
    child: std::process::Child,
    addr: String,
}

impl Bare {
    /// Starts it with `args` and waits until it listens.
    async fn start(args: &[&str]) -> Self {
        let binary = std::env::current_exe().unwrap().parent().unwrap().join("bare_graphql");
        let addr = format!("127.0.0.1:{}", pg_cluster::free_port());
        let child = std::process::Command::new(&binary)
            .arg(&addr)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (cargo build --release --examples)", binary.display()));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr }
    }

    /// Loads it with `body` from 64 connections for `window`.
    async fn load(&self, body: &str, check: Arc<dyn Fn(&str) -> bool + Send + Sync>, window: Duration) -> Report {
        let request = load::post(&self.addr, "/graphql", None, body);
        load::run(&self.addr, CONNECTIONS, window, Arc::new(move |_| request.clone()), check).await
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `count` organizations with a key and credits each, 64 at a time; their keys.
async fn organizations(server: &Server, count: usize, credits: i64) -> Vec<String> {
    let client = reqwest::Client::new();
    futures::stream::iter(0..count)
        .map(|n| {
            let client = client.clone();
            async move { server.organization(&client, &format!("org {n}"), credits).await.1 }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// The price of `/metrics`: the hot-organization consumes and the reads, on a server
/// without metrics and then on one with `CREDITS_METRICS_TOKEN`, scraped every second
/// meanwhile (`BENCH_ONLY=metrics`).
async fn metrics_cost(label: &str, database_url: Option<&str>, window: Duration, rows: &mut Vec<Row>) {
    const METRICS_TOKEN: &str = "bench-metrics-token-0123456789";
    for on in [false, true] {
        let mut env = vec![("CREDITS_RATE_LIMIT", "off")];
        if on {
            env.push(("CREDITS_METRICS_TOKEN", METRICS_TOKEN));
        }
        let server = Server::start_on(database_url, &env).await;
        let key = organizations(&server, 1, 1_000_000_000_000).await.remove(0);
        let scraping = on.then(|| {
            let url = format!("{}/metrics", server.base);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let scraped = client.get(&url).bearer_auth(METRICS_TOKEN).send().await;
                    assert!(scraped.is_ok_and(|response| response.status() == 200), "scrape failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        let state = if on { "metrics on" } else { "metrics off" };
        let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
        let request = load::post(&server.addr, "/graphql", Some(&key), &consume_body(1));
        let report = load::run(
            &server.addr,
            CONNECTIONS,
            window,
            Arc::new(move |_| request.clone()),
            consume_check(&acknowledged),
        )
        .await;
        let rss_mib = server.rss_kib() / 1024;
        rows.push(Row { scenario: format!("{label}, {state}: one hot organization, consume"), report, rss_mib });
        let read = load::post(&server.addr, "/graphql", Some(&key), &json!({ "query": READ }).to_string());
        let report = load::run(&server.addr, CONNECTIONS, window, Arc::new(move |_| read.clone()), read_check()).await;
        let rss_mib = server.rss_kib() / 1024;
        rows.push(Row { scenario: format!("{label}, {state}: creditBalance reads"), report, rss_mib });
        if let Some(scraping) = scraping {
            scraping.abort();
        }
    }
}

/// Every scenario on one engine; then the ledger is verified.
async fn engine(label: &str, database_url: Option<&str>, seconds: u64, rows: &mut Vec<Row>) {
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "metrics") {
        metrics_cost(label, database_url, Duration::from_secs(seconds), rows).await;
        return;
    }
    let server = Server::start_on(
        database_url,
        &[
            ("CREDITS_RATE_LIMIT", "off"),
            // The webhook scenario's receiver listens on 127.0.0.1.
            ("CREDITS_WEBHOOK_ALLOW_HTTP", "true"),
            ("CREDITS_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
    )
    .await;
    let window = Duration::from_secs(seconds);
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    // `BENCH_ONLY=webhooks` runs the webhook scenario alone.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "webhooks") {
        webhooks(label, &server, window, rows).await;
        return;
    }
    // `BENCH_ONLY=lots` runs the lots scenario alone (for profiling it).
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "lots") {
        lots(label, &server, &acknowledged, rows).await;
        let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
        verify(&server.database_url, &acknowledged, 0).await;
        return;
    }
    // `BENCH_ONLY=organizations` runs the 1,000-organization consumes alone.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "organizations") {
        spread(label, &server, 1_000, window, &acknowledged, rows).await;
        let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
        verify(&server.database_url, &acknowledged, CONNECTIONS).await;
        return;
    }
    let (hot_org, hot_key) = server.organization(&reqwest::Client::new(), "hot", 1_000_000_000_000).await;
    // `BENCH_ONLY=reads` runs the reads against their anchor alone.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "reads") {
        reads_and_anchor(label, &server, &hot_org, &hot_key, seconds, rows).await;
        return;
    }

    // 1. One hot organization.
    let request = load::post(&server.addr, "/graphql", Some(&hot_key), &consume_body(1));
    let report =
        load::run(&server.addr, CONNECTIONS, window, Arc::new(move |_| request.clone()), consume_check(&acknowledged))
            .await;
    rows.push(Row::measured(format!("{label}: one hot organization, consume"), report, &server));
    // 1b. The same with an idempotency key each, as a careful client sends them.
    let (addr, key) = (server.addr.clone(), hot_key.clone());
    let keyed = move |i: u64| load::post(&addr, "/graphql", Some(&key), &keyed_consume_body(i));
    let report = load::run(&server.addr, CONNECTIONS, window, Arc::new(keyed), consume_check(&acknowledged)).await;
    rows.push(Row::measured(format!("{label}: one hot organization, consume with a key each"), report, &server));
    // `BENCH_ONLY=hot` runs the hot organization alone.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "hot") {
        let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
        verify(&server.database_url, &acknowledged, 2 * CONNECTIONS).await;
        return;
    }

    // 2. Reads of the same organization while it consumes.
    let read = load::post(&server.addr, "/graphql", Some(&hot_key), &json!({ "query": READ }).to_string());
    let consume = load::post(&server.addr, "/graphql", Some(&hot_key), &consume_body(1));
    let (reads, _) = tokio::join!(
        load::run(&server.addr, CONNECTIONS, window, Arc::new(move |_| read.clone()), read_check()),
        load::run(&server.addr, 8, window, Arc::new(move |_| consume.clone()), consume_check(&acknowledged)),
    );
    rows.push(Row::measured(format!("{label}: creditBalance reads, 8 consumers alongside"), reads, &server));

    // 2b. Reads alone, against the anchor.
    reads_and_anchor(label, &server, &hot_org, &hot_key, seconds, rows).await;

    // 3. 1,000 and 10,000 organizations, each request to another one.
    for count in [1_000, 10_000] {
        spread(label, &server, count, window, &acknowledged, rows).await;
    }

    // 4. Lots.
    lots(label, &server, &acknowledged, rows).await;
    // 5. Outgoing webhooks.
    webhooks(label, &server, window, rows).await;
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    // Timed windows of consumes: the hot organization with and without keys, the 8
    // consumers beside the reads, 1,000 and 10,000 organizations (the lots' bursts are
    // answered whole).
    verify(&server.database_url, &acknowledged, 4 * CONNECTIONS + 8).await;
}

/// Consumes from 64 connections spread over `count` new organizations (each request to
/// another one, in a fixed scattered order).
async fn spread(
    label: &str,
    server: &Server,
    count: usize,
    window: Duration,
    acknowledged: &Arc<Mutex<Vec<String>>>,
    rows: &mut Vec<Row>,
) {
    let keys = organizations(server, count, 1_000_000).await;
    let requests: Arc<Vec<Vec<u8>>> =
        Arc::new(keys.iter().map(|key| load::post(&server.addr, "/graphql", Some(key), &consume_body(1))).collect());
    let report = load::run(
        &server.addr,
        CONNECTIONS,
        window,
        Arc::new(move |n| requests[(n as usize * 7_919) % requests.len()].clone()),
        consume_check(acknowledged),
    )
    .await;
    rows.push(Row::measured(
        format!("{label}: {},{:03} organizations, consume", count / 1_000, count % 1_000),
        report,
        server,
    ));
}

/// `creditBalance { balance }` reads of one organization from 64 connections, and the
/// same reads from the anchor (async-graphql and one sqlx `SELECT`) on the same database,
/// [`READ_ROUNDS`] rounds of each in turn in one window; prints what share of the
/// anchor `credits` reaches.
async fn reads_and_anchor(label: &str, server: &Server, org: &str, key: &str, seconds: u64, rows: &mut Vec<Row>) {
    let round = Duration::from_secs(seconds) / READ_ROUNDS as u32;
    let body = json!({ "query": READ }).to_string();
    let read = load::post(&server.addr, "/graphql", Some(key), &body);
    // The anchor: async-graphql answering the reads with one sqlx `SELECT` of the
    // organization's balance per request, on the same database.
    let bare = Bare::start(&[&server.database_url, org]).await;
    let (mut ours, mut anchor) = (Report::default(), Report::default());
    for _ in 0..READ_ROUNDS {
        let read = read.clone();
        ours = ours
            .merge(load::run(&server.addr, CONNECTIONS, round, Arc::new(move |_| read.clone()), read_check()).await);
        anchor = anchor.merge(bare.load(&body, read_check(), round).await);
    }
    drop(bare);
    println!(
        "{label}: creditBalance reads {:.0}/s = {:.2} of the one-SELECT anchor's {:.0}/s (p99 {} vs {}; {READ_ROUNDS} rounds of each in turn)",
        ours.throughput(),
        ours.throughput() / anchor.throughput(),
        anchor.throughput(),
        ms(ours.latency(0.99)),
        ms(anchor.latency(0.99)),
    );
    rows.push(Row::measured(format!("{label}: creditBalance reads"), ours, server));
    rows.push(Row {
        scenario: format!("{label}: anchor: async-graphql + one sqlx SELECT per read"),
        report: anchor,
        rss_mib: 0,
    });
}

/// The deliveries a local receiver heard: how long after its event's commit (the body's
/// `timestamp`) each arrived, and the distinct `webhook-id`s among them.
#[derive(Default)]
struct Heard {
    delays: Vec<Duration>,
    ids: std::collections::HashSet<String>,
}

/// A local webhook receiver, recording what it [`Heard`].
async fn receiver() -> (String, Arc<Mutex<Heard>>) {
    let heard: Arc<Mutex<Heard>> = Arc::default();
    let recorded = heard.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|id| id.to_str().ok()).unwrap_or_default();
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let committed =
                    event["timestamp"].as_str().and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
                let delay = committed.map(|committed| {
                    (chrono::Utc::now() - committed.with_timezone(&chrono::Utc)).to_std().unwrap_or_default()
                });
                // Both under one lock, so that a reader never sees the id without its delay.
                let mut heard = recorded.lock().unwrap();
                heard.ids.insert(id.to_owned());
                heard.delays.extend(delay);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, heard)
}

/// Rounds of our reads and the anchor's, in turn (so that whatever changes during the run
/// weighs on both alike: this machine's limit moves by half within the hour).
const READ_ROUNDS: usize = 3;

/// Rounds of grants without and with a webhook endpoint, in turn.
const WEBHOOK_ROUNDS: usize = 2;

/// Grants from 64 connections with no webhook endpoint and with one subscribed to every
/// type, in turn ([`WEBHOOK_ROUNDS`] rounds of each, half a window each), so that whatever
/// changes during the run (the tables growing, the machine) weighs on both alike; after
/// each round with the endpoint, its events are let arrive before the next round without
/// (so the dispatcher's backlog never runs beside the grants it is compared with). How
/// many events were delivered per second (while grants came and until each round's had
/// arrived) and how soon after commit.
async fn webhooks(label: &str, server: &Server, window: Duration, rows: &mut Vec<Row>) {
    let client = reqwest::Client::new();
    // Each storm grants to an organization of its own, so both start from no lots.
    let storm = |name: &'static str| {
        let client = client.clone();
        async move {
            let data = server
                .gql(
                    &client,
                    common::TOKEN,
                    "mutation($n: String!) { createOrganization(input: { name: $n }) { id } }",
                    json!({ "n": name }),
                )
                .await;
            let org = data["createOrganization"]["id"].as_str().unwrap().to_owned();
            let grant = json!({ "query": "mutation($o: ID!) { grantCredits(input: { organizationId: $o, amount: 1, description: \"bench\" }) { transaction { id } } }", "variables": { "o": org } }).to_string();
            let request = load::post(&server.addr, "/graphql", Some(common::TOKEN), &grant);
            let check: Arc<dyn Fn(&str) -> bool + Send + Sync> =
                Arc::new(|body: &str| body.contains("\"transaction\":{\"id\":\"ctx_") && !body.contains("errors"));
            (org, request, check)
        }
    };
    let (_, plain, plain_check) = storm("not hooked").await;
    let (org, hooked, hooked_check) = storm("hooked").await;
    let (url, heard) = receiver().await;
    server
        .gql(
            &client,
            common::TOKEN,
            "mutation($o: ID!, $u: String!) { createWebhookEndpoint(input: { organizationId: $o, url: $u }) { secret } }",
            json!({ "o": org, "u": url }),
        )
        .await;
    let half = window / 2;
    let (mut without, mut with) = (load::Report::default(), load::Report::default());
    let mut delivering = Duration::ZERO;
    for _ in 0..WEBHOOK_ROUNDS {
        let request = plain.clone();
        let round = load::run(&server.addr, CONNECTIONS, half, Arc::new(move |_| request.clone()), plain_check.clone());
        without = without.merge(round.await);
        let started = std::time::Instant::now();
        let request = hooked.clone();
        let round =
            load::run(&server.addr, CONNECTIONS, half, Arc::new(move |_| request.clone()), hooked_check.clone());
        with = with.merge(round.await);
        // Every event so far (one per grant) delivered, or a minute passed. The grants
        // answered within the windows are counted; those still in flight at a window's
        // end (at most one a connection) commit too, and their events arrive as well.
        let expected = with.ok as usize;
        while heard.lock().unwrap().ids.len() < expected && started.elapsed() < Duration::from_secs(60 + half.as_secs())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        delivering += started.elapsed();
    }
    let expected = with.ok as usize;
    let (mut delays, distinct) = {
        let heard = heard.lock().unwrap();
        (heard.delays.clone(), heard.ids.len())
    };
    delays.sort();
    println!(
        "{label}: webhooks: {:.0} grants/s with one endpoint vs {:.0}/s with none ({:.2}×, {WEBHOOK_ROUNDS} rounds of each in turn); {} deliveries ({distinct} distinct events) for the {expected} grants answered in the windows, in {:.1} s ({:.0}/s); commit → delivery p50 {} p99 {}",
        with.throughput(),
        without.throughput(),
        with.throughput() / without.throughput(),
        delays.len(),
        delivering.as_secs_f64(),
        delays.len() as f64 / delivering.as_secs_f64(),
        ms(common::percentile(&delays, 0.5)),
        ms(common::percentile(&delays, 0.99)),
    );
    rows.push(Row::measured(format!("{label}: grants, no webhook endpoint"), without, server));
    rows.push(Row::measured(format!("{label}: grants, one endpoint (every type)"), with, server));
}

/// The same rounds of consumes drawing from one lot, from two and from three lots each,
/// taken in turn (a round of each, then the next), so that whatever changes during the
/// run (the tables growing, background work) weighs on the three alike.
async fn lots(label: &str, server: &Server, acknowledged: &Arc<Mutex<Vec<String>>>, rows: &mut Vec<Row>) {
    let round = CONNECTIONS as i64;
    // (credits per lot, name): one lot per round; lots of 2 for consumes of 3 (every
    // consume spans exactly 2 lots); lots of 1 (3 lots each).
    let variants =
        [(3 * round, "consume from one lot"), (2, "consume from 2 lots each"), (1, "consume from 3 lots each")];
    let mut runs = Vec::new();
    for (lot_size, _) in variants {
        runs.push(LotRounds::new(server, lot_size).await);
    }
    for _ in 0..LOT_ROUNDS {
        for run in &mut runs {
            run.round(server, acknowledged).await;
        }
    }
    for (run, (_, name)) in runs.into_iter().zip(variants) {
        rows.push(Row::measured(format!("{label}: lots, {name}"), run.total, server));
    }
}

/// Rounds of the lots scenario, for each of its three kinds of consume.
const LOT_ROUNDS: usize = 150;

/// Credits per consume in the lots scenario.
const LOT_CONSUME: i64 = 3;

/// Rounds of 64 simultaneous consumes of [`LOT_CONSUME`] credits by one organization.
/// Before each round (untimed) the organization is given exactly what the round
/// consumes, in lots of `lot_size` credits, so every consume draws from the same number
/// of lots and the lots open at any time stay few.
struct LotRounds {
    client: reqwest::Client,
    org: String,
    lot_size: i64,
    connections: Vec<tokio::net::TcpStream>,
    request: Vec<u8>,
    total: Report,
}

impl LotRounds {
    async fn new(server: &Server, lot_size: i64) -> Self {
        let client = reqwest::Client::new();
        let (org, key) = server.organization(&client, &format!("lots of {lot_size}"), 0).await;
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let conn = tokio::net::TcpStream::connect(&server.addr).await.expect("connect");
            conn.set_nodelay(true).expect("nodelay");
            connections.push(conn);
        }
        let request = load::post(&server.addr, "/graphql", Some(&key), &consume_body(LOT_CONSUME));
        Self { client, org, lot_size, connections, request, total: Report::default() }
    }

    async fn round(&mut self, server: &Server, acknowledged: &Arc<Mutex<Vec<String>>>) {
        let grant = "mutation($o: ID!, $n: Credits!) { grantCredits(input: { organizationId: $o, amount: $n, description: \"lot\" }) { replayed } }";
        let round_credits = CONNECTIONS as i64 * LOT_CONSUME;
        futures::stream::iter(0..round_credits / self.lot_size)
            .map(|_| server.gql(&self.client, common::TOKEN, grant, json!({ "o": self.org, "n": self.lot_size })))
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let request = &self.request;
        let round = load::burst(&mut self.connections, |_| request.clone(), consume_check(acknowledged)).await;
        self.total = std::mem::take(&mut self.total).merge(round);
    }
}

/// The ledger after the load: balances are sums, nothing negative, one transaction per
/// acknowledged consume, and at most `cut_off` more: answers cut off at a timed window's
/// end, one per consuming connection of each such window (a normal run can reach it; a
/// consume committed but answered with an error inside a window would pass it, and fail).
async fn verify(database_url: &str, acknowledged: &[String], cut_off: usize) {
    // Let the server's last commits land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = Database::connect(database_url).await.expect("connect for verification");
    let backend = db.get_database_backend();
    let mismatched = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM credit_balances b WHERE b.balance <> \
             (SELECT COALESCE(SUM(t.amount), 0) FROM credit_transactions t WHERE t.organization_id = b.organization_id) \
             OR b.balance < 0",
        ))
        .await
        .expect("query")
        .and_then(|row| row.try_get::<i64>("", "n").ok())
        .unwrap_or(-1);
    assert_eq!(mismatched, 0, "every balance is the sum of its transactions, and none is negative");
    let ids: HashSet<String> = db
        .query_all_raw(Statement::from_string(backend, "SELECT id FROM credit_transactions WHERE kind = 'CONSUMPTION'"))
        .await
        .expect("query")
        .into_iter()
        .filter_map(|row| row.try_get::<String>("", "id").ok())
        .collect();
    let unique: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(unique.len(), acknowledged.len(), "no transaction acknowledged twice");
    assert!(acknowledged.iter().all(|id| ids.contains(id)), "every acknowledged consume is in the ledger");
    let extra = ids.len() - acknowledged.len();
    assert!(extra <= cut_off, "{extra} consumes committed without an acknowledgement counted (at most {cut_off})");
    println!(
        "ledger verified: {} acknowledged consumes, each one transaction ({extra} more were in flight when a window closed); every balance = sum of its transactions, none negative",
        acknowledged.len()
    );
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "machine: {cores} cores; load generator and servers share them; {CONNECTIONS} connections; {seconds} s per run"
    );
    // Half the limit's window before everything and half after: this machine's limit moves
    // by half within the hour, and the shares are of the two together.
    let first = measure_limit(seconds.div_ceil(2)).await;
    assert_eq!(first.errors, 0, "{:?}", first.first_error);
    let mut rows = Vec::new();
    engine("SQLite", None, seconds, &mut rows).await;
    match Postgres::start() {
        Ok(postgres) => {
            let admin = Database::connect(format!("{}/postgres", postgres.setup.base_url())).await.expect("connect");
            admin.execute_unprepared("CREATE DATABASE bench").await.expect("create database");
            let url = format!("{}/bench", postgres.setup.base_url());
            engine("PostgreSQL", Some(&url), seconds, &mut rows).await;
        }
        Err(error) => println!("!!! PostgreSQL skipped: {error}"),
    }
    let last = measure_limit(seconds.div_ceil(2)).await;
    assert_eq!(last.errors, 0, "{:?}", last.first_error);
    println!(
        "limit: {:.0}/s before the scenarios, {:.0}/s after them; the shares below are of both together",
        first.throughput(),
        last.throughput()
    );
    let limit = first.merge(last);
    println!();
    println!("| scenario | answers/s | share of the limit | p50 | p99 | max | errors | server RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| limit: bare async-graphql-axum, same mutation, no database | {:.0} | 1.00 | {} | {} | {} | {} | |",
        limit.throughput(),
        ms(limit.latency(0.5)),
        ms(limit.latency(0.99)),
        ms(limit.latency(1.0)),
        limit.errors
    );
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {} | {} | {} | {} | {} MiB |",
            row.scenario,
            row.report.throughput(),
            row.report.throughput() / limit.throughput(),
            ms(row.report.latency(0.5)),
            ms(row.report.latency(0.99)),
            ms(row.report.latency(1.0)),
            row.report.errors,
            row.rss_mib
        );
        if let Some(error) = &row.report.first_error {
            println!("  first error: {error}");
        }
    }
    println!();
    for triple in rows.windows(3) {
        if !triple[0].scenario.ends_with("consume from one lot") {
            continue;
        }
        let single = &triple[0].report;
        for (lots, multi) in [(2, &triple[1].report), (3, &triple[2].report)] {
            println!(
                "{}: a consume drawing from {lots} lots costs {:.2}× one drawing from a single lot (throughput {:.0}/s vs {:.0}/s; p50 {} vs {})",
                triple[0].scenario.split(':').next().unwrap_or_default(),
                single.throughput() / multi.throughput(),
                multi.throughput(),
                single.throughput(),
                ms(multi.latency(0.5)),
                ms(single.latency(0.5)),
            );
        }
    }
}
