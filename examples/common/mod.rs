//! What the benchmarks share: the release server as a child process, GraphQL calls that
//! check their answer, organizations with keys, percentiles and memory.

#![allow(dead_code)]

pub mod load;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The admin token the benchmark servers run with.
pub const TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// A `credits` server process, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The database it serves.
    pub database_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `target/release/credits` next to this example over `DATABASE_URL` (default:
    /// a fresh SQLite file) with `env`, and waits until it is ready.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let url = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty());
        Self::start_on(url.as_deref(), env).await
    }

    /// Starts the server over `database_url` (a fresh SQLite file when `None`).
    pub async fn start_on(database_url: Option<&str>, env: &[(&str, &str)]) -> Self {
        let binary = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("credits");
        let dir = tempfile::tempdir().unwrap();
        let database_url = database_url
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(&binary);
        command
            .env("DATABASE_URL", &database_url)
            .env("CREDITS_ADDR", format!("127.0.0.1:{port}"))
            .env("CREDITS_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run cargo build --release first)", binary.display()));
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            database_url,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{}/readyz", server.base)).send().await.map(|r| r.status().is_success()).ok()
            != Some(true)
        {
            assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }

    /// A GraphQL call that must succeed; its `data`.
    pub async fn gql(&self, client: &reqwest::Client, token: &str, query: &str, variables: Value) -> Value {
        let body: Value = client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON");
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// A new organization with an API key and `credits` granted: (id, key).
    pub async fn organization(&self, client: &reqwest::Client, name: &str, credits: i64) -> (String, String) {
        let data = self
            .gql(
                client,
                TOKEN,
                "mutation($n: String!) { createOrganization(input: { name: $n }) { id } }",
                json!({ "n": name }),
            )
            .await;
        let org = data["createOrganization"]["id"].as_str().unwrap().to_owned();
        let data = self
            .gql(
                client,
                TOKEN,
                "mutation($o: ID!) { createApiKey(input: { organizationId: $o, name: \"bench\" }) { secret } }",
                json!({ "o": org }),
            )
            .await;
        let key = data["createApiKey"]["secret"].as_str().unwrap().to_owned();
        if credits > 0 {
            self.gql(
                client,
                TOKEN,
                "mutation($o: ID!, $n: Credits!) { grantCredits(input: { organizationId: $o, amount: $n, description: \"bench\" }) { replayed } }",
                json!({ "o": org, "n": credits }),
            )
            .await;
        }
        (org, key)
    }
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
