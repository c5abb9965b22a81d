//! Usage reports and export over a large history: one organization with a million
//! transactions spread over a year, on SQLite and on PostgreSQL.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_usage -- [TRANSACTIONS]
//! ```
//! Measures, against the release server over HTTP:
//! - `creditUsage` by day over 30 days and by month over 12 months, both split by
//!   reference type (the median of 7 answers, each checked against the history's sums);
//! - beside it, in the same run, the floor a report without the rollup could not beat:
//!   one `SELECT kind, SUM(amount) … GROUP BY kind` over the organization's transactions,
//!   straight on the database (the ratio says what the rollup buys);
//! - `GET /export/transactions` of the whole history as CSV: rows per second and the
//!   server's peak resident memory before and after.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/api/support/pg_cluster.rs"]
mod pg_cluster;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Server, TOKEN, ms};
use credits::ledger::{Amount, ChangeRequest, Clock, GrantRequest, Ledger, TransactionKind};
use pg_cluster::{Durability, PgSetup};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

/// Changes per database transaction while writing the history: small, so that the
/// history has many distinct instants (and the rollup many slots).
const PER_COMMIT: usize = 20;

struct Postgres {
    setup: PgSetup,
    server: Child,
}

impl Postgres {
    fn start() -> Result<Self, String> {
        let setup = PgSetup::init("bench-usage")?;
        let script = format!("exec {}", setup.server_command(Durability::Production));
        let server = setup
            .run_as(std::path::Path::new("sh"))
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        setup.wait_ready(Duration::from_secs(60))?;
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

/// Writes `count` consumes of 1 to 3 credits over the year before `end`, through the
/// ledger (so the rollup is written as in production), with three reference types.
async fn write_history(database_url: &str, organization_id: &str, count: usize, end: DateTime<Utc>) -> Duration {
    let started = Instant::now();
    let db = credits::db::connect(database_url).await.expect("connect");
    let year = 365 * 86_400;
    let seconds = Arc::new(AtomicI64::new(end.timestamp() - year));
    let read = seconds.clone();
    let clock = Clock::from_fn(move || DateTime::from_timestamp(read.load(Ordering::SeqCst), 0).expect("instant"));
    let ledger = Ledger::new(db).with_clock(clock);
    let seed = GrantRequest::new(
        organization_id.to_owned(),
        Amount::parse(3 * count as i64).expect("amount"),
        "seed".into(),
        None,
    );
    ledger.grant(seed.expect("grant")).await.expect("granted");
    let commits = count.div_ceil(PER_COMMIT);
    for commit in 0..commits {
        seconds.store(end.timestamp() - year + (commit as i64 * year) / commits as i64, Ordering::SeqCst);
        let mut tx = ledger.begin().await.expect("begin");
        for index in commit * PER_COMMIT..((commit + 1) * PER_COMMIT).min(count) {
            let request = ChangeRequest {
                organization_id: organization_id.to_owned(),
                kind: TransactionKind::Consumption,
                delta: -(1 + index as i64 % 3),
                description: Some("usage".into()),
                reference_type: Some(["ai_image", "llm_call", "export"][index % 3].to_owned()),
                reference_id: None,
                idempotency_key: None,
                lot: None,
                by: Default::default(),
            };
            tx.change(&request).await.expect("consume");
        }
        tx.commit().await.expect("commit");
        if commit % (commits / 10).max(1) == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    started.elapsed()
}

fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn engine(label: &str, database_url: Option<&str>, count: usize) {
    let server = Server::start_on(database_url, &[("CREDITS_RATE_LIMIT", "off")]).await;
    let client = reqwest::Client::new();
    let data =
        server.gql(&client, TOKEN, "mutation { createOrganization(input: { name: \"big\" }) { id } }", json!({})).await;
    let org = data["createOrganization"]["id"].as_str().expect("id").to_owned();
    let end = Utc::now();
    let wrote = write_history(&server.database_url, &org, count, end).await;
    println!("{label}: wrote {count} transactions through the ledger in {:.1} s", wrote.as_secs_f64());

    // The floor without a rollup: one grouped scan of the organization's transactions.
    let db = Database::connect(&server.database_url).await.expect("connect");
    let backend = db.get_database_backend();
    let placeholder = if backend == sea_orm::DbBackend::Postgres { "$1" } else { "?" };
    let scan = format!(
        "SELECT kind, SUM(amount) FROM credit_transactions WHERE organization_id = {placeholder} GROUP BY kind"
    );
    let mut scans = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        db.query_all_raw(Statement::from_sql_and_values(backend, &scan, [org.clone().into()])).await.expect("scan");
        scans.push(started.elapsed());
    }
    let scan = median(scans);

    let report = |interval: &'static str, days: i64| {
        let (client, server, org) = (client.clone(), &server, org.clone());
        async move {
            let mut times = Vec::new();
            let mut consumed = 0;
            for _ in 0..7 {
                let started = Instant::now();
                let data = server
                    .gql(
                        &client,
                        TOKEN,
                        "query($org: ID!, $from: DateTime!, $to: DateTime!, $interval: UsageInterval!) { creditUsage(organizationId: $org, from: $from, to: $to, interval: $interval, groupBy: REFERENCE_TYPE) { buckets { consumed } totals { consumed transactions } } }",
                        json!({ "org": org, "from": (end - chrono::Duration::days(days)).to_rfc3339(), "to": (end + chrono::Duration::seconds(1)).to_rfc3339(), "interval": interval }),
                    )
                    .await;
                times.push(started.elapsed());
                let report: &Value = &data["creditUsage"];
                consumed = report["totals"]["consumed"].as_i64().expect("consumed");
                let buckets: i64 = report["buckets"]
                    .as_array()
                    .expect("buckets")
                    .iter()
                    .map(|b| b["consumed"].as_i64().unwrap_or(0))
                    .sum();
                assert_eq!(buckets, consumed, "buckets add up to the totals");
            }
            (median(times), consumed)
        }
    };
    let (daily, _) = report("DAY", 30).await;
    let (monthly, consumed) = report("MONTH", 366).await;
    let expected: i64 = (0..count as i64).map(|index| 1 + index % 3).sum();
    assert_eq!(consumed, expected, "a year's report holds every consume");

    // The export, streamed and counted.
    let before = peak_kib(server.pid());
    let started = Instant::now();
    let mut response = client
        .get(format!("{}/export/transactions?format=csv&organizationId={org}", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("export");
    assert!(response.status().is_success(), "export: {}", response.status());
    let (mut lines, mut bytes) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        bytes += chunk.len();
        lines += chunk.iter().filter(|byte| **byte == b'\n').count();
    }
    let export = started.elapsed();
    let after = peak_kib(server.pid());
    assert!(lines > count, "every row exported ({lines} lines)");

    println!(
        "| {label} | creditUsage DAY × 30, by reference type | {} | {:.1}× faster than one grouped scan ({}) |",
        ms(daily),
        scan.as_secs_f64() / daily.as_secs_f64(),
        ms(scan)
    );
    println!(
        "| {label} | creditUsage MONTH × 12, by reference type | {} | {:.1}× faster than one grouped scan ({}) |",
        ms(monthly),
        scan.as_secs_f64() / monthly.as_secs_f64(),
        ms(scan)
    );
    println!(
        "| {label} | export CSV, {count} rows ({:.0} MB) | {:.1} s | {:.0} rows/s; server peak RSS {} → {} MiB |",
        bytes as f64 / 1e6,
        export.as_secs_f64(),
        lines as f64 / export.as_secs_f64(),
        before / 1024,
        after / 1024
    );
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    println!("| engine | what | median | compared |");
    println!("|---|---|---|---|");
    engine("SQLite", None, count).await;
    match Postgres::start() {
        Ok(postgres) => {
            let admin = Database::connect(format!("{}/postgres", postgres.setup.base_url())).await.expect("connect");
            admin.execute_unprepared("CREATE DATABASE bench").await.expect("create database");
            let url = format!("{}/bench", postgres.setup.base_url());
            engine("PostgreSQL", Some(&url), count).await;
        }
        Err(error) => println!("!!! PostgreSQL skipped: {error}"),
    }
}
