//! Fairness benchmark: while one organization's key floods the server from 32
//! connections as fast as it can, how does another organization's traffic fare? A load
//! generator, not a test: it checks every response and prints what it measured.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_fair -- [SECONDS]
//! ```
//! The server runs with its defaults (`CREDITS_RATE_LIMIT` 1000/s) as a separate
//! `target/release/credits` process; `DATABASE_URL` picks the database (default: a fresh
//! SQLite file). The quiet organization reads its balance 200 times a second, first
//! alone, then under the flood; the report puts its latencies side by side.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Server, ms, percentile};
use serde_json::{Value, json};

/// One organization's reads for `seconds`, 200 a second (well inside its own rate
/// limit): every latency, sorted.
async fn quiet_reads(server: &Server, client: &reqwest::Client, key: &str, seconds: u64) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        pace.tick().await;
        let started = Instant::now();
        let data = server.gql(client, key, "{ creditBalance { balance } }", json!({})).await;
        latencies.push(started.elapsed());
        assert_eq!(data["creditBalance"]["balance"], 1_000, "quiet organization's balance");
    }
    latencies.sort();
    latencies
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10);
    let server = Arc::new(Server::start(&[]).await);
    let client = reqwest::Client::new();
    let (_, flood_key) = server.organization(&client, "flooding", 1_000_000_000).await;
    let (_, quiet_key) = server.organization(&client, "quiet", 1_000).await;

    let idle = quiet_reads(&server, &client, &quiet_key, seconds).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (admitted, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood_started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..32 {
        let (server, key, stop) = (server.clone(), flood_key.clone(), stop.clone());
        let (admitted, limited) = (admitted.clone(), limited.clone());
        // One client per task: 32 connections, as 32 clients of one tenant would open.
        let client = reqwest::Client::new();
        flooders.push(tokio::spawn(async move {
            // A page with its count: what a scraping client asks for.
            let query =
                json!({ "query": "{ creditTransactions(first: 100) { totalCount edges { node { id amount } } } }" });
            while !stop.load(Ordering::Relaxed) {
                let response =
                    client.post(format!("{}/graphql", server.base)).bearer_auth(&key).json(&query).send().await;
                let Ok(response) = response else { continue };
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                match status {
                    200 if body.get("errors").is_none() => admitted.fetch_add(1, Ordering::Relaxed),
                    429 if body["errors"][0]["extensions"]["code"] == "RATE_LIMITED" => {
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => panic!("unexpected answer to the flood: {status} {body}"),
                };
            }
        }));
    }
    // Let the flood build up, then measure the quiet organization under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flooded = quiet_reads(&server, &client, &quiet_key, seconds).await;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let elapsed = flood_started.elapsed().as_secs_f64();
    let (admitted, limited) = (admitted.load(Ordering::Relaxed), limited.load(Ordering::Relaxed));

    println!("fairness: one key floods from 32 connections, another organization reads ({seconds} s each)");
    println!("| quiet organization | requests | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (label, latencies) in [("alone", &idle), ("under the flood", &flooded)] {
        println!(
            "| {label} | {} | {} | {} | {} |",
            latencies.len(),
            ms(percentile(latencies, 0.5)),
            ms(percentile(latencies, 0.99)),
            ms(percentile(latencies, 1.0))
        );
    }
    println!(
        "flooding key: {:.0} answered/s ({:.0} admitted/s, {:.0} refused with 429/s); quiet p50 ratio {:.1}x, p99 ratio {:.1}x; server RSS {} MiB",
        (admitted + limited) as f64 / elapsed,
        admitted as f64 / elapsed,
        limited as f64 / elapsed,
        percentile(&flooded, 0.5).as_secs_f64() / percentile(&idle, 0.5).as_secs_f64().max(1e-9),
        percentile(&flooded, 0.99).as_secs_f64() / percentile(&idle, 0.99).as_secs_f64().max(1e-9),
        server.rss_kib() / 1024
    );
}
