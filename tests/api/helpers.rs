//! Test harness: a real server on 127.0.0.1:0 over a fresh database per test, on SQLite
//! (a temp file) or on a throw-away PostgreSQL cluster this harness starts itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use credits::app::Application;
use credits::config::Config;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

/// The admin token every test server is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A database engine under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Runs the async test body once per engine, as two `#[tokio::test]`s in a module.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Engine::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Engine::Postgres).await
            }
        }
    )+};
}

/// A fresh, migrated database; dropped with the test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh database on `engine`, or `None` (with a loud note) when PostgreSQL is not
/// available outside CI. In CI (`CI=true`) a missing PostgreSQL fails the test.
pub async fn database(engine: Engine) -> Option<TestDatabase> {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("credits.db").display());
            Some(TestDatabase { url, _dir: Some(dir) })
        }
        Engine::Postgres => {
            let Some(server) = postgres_server() else {
                if in_ci() {
                    panic!("PostgreSQL is required in CI but could not be started");
                }
                skip_loudly(
                    "PostgreSQL is not available here (set PG_BIN or CREDITS_TEST_POSTGRES_URL); this test ran on SQLite only",
                );
                return None;
            };
            let name = format!("t_{}", uuid_like());
            let admin = Database::connect(format!("{server}/postgres")).await.expect("connect to test cluster");
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
            admin.close().await.ok();
            Some(TestDatabase { url: format!("{server}/{name}"), _dir: None })
        }
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Says that a test is skipped, past the harness's output capture so it is seen.
pub fn skip_loudly(why: &str) {
    let note = format!("\n!!! SKIPPED: {why} !!!\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
}

/// The folder of the npm reference clients, if `package` is installed there. When it is
/// not and npm is on the PATH, the packages are installed once from the lock file
/// (`npm ci --prefix tests/audit`, what `.ci/run` does). Outside CI a package still
/// missing skips the test loudly; in CI it fails.
pub fn node_tool(package: &str) -> Option<&'static str> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/audit");
    let present = || Path::new(dir).join("node_modules").join(package).exists();
    if !present() {
        INSTALLED.get_or_init(|| {
            let installed = Command::new("npm")
                .args(["ci", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !installed {
                eprintln!("npm ci --prefix tests/audit failed or npm is not installed");
            }
            installed
        });
    }
    if present() {
        return Some(dir);
    }
    if in_ci() {
        panic!("{package} is not installed in tests/audit (npm ci --prefix tests/audit)");
    }
    skip_loudly(&format!("{package} is not installed and npm could not install it; run `npm ci --prefix tests/audit`"));
    None
}

/// Debian's Chromium (or `CHROMIUM`), for the browser tests. Outside CI a missing one
/// skips them loudly; in CI it fails (`.ci/run` installs it).
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    if in_ci() {
        panic!("Chromium is required in CI but {} does not exist (apt-get install chromium)", path.display());
    }
    skip_loudly(&format!("Chromium is not installed ({}); the browser tests did not run", path.display()));
    None
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The base URL (`postgres://user@127.0.0.1:port`) of the shared throw-away cluster.
fn postgres_server() -> Option<String> {
    static SERVER: OnceLock<Option<PgCluster>> = OnceLock::new();
    if let Ok(url) = std::env::var("CREDITS_TEST_POSTGRES_URL") {
        return Some(url.trim_end_matches('/').to_owned());
    }
    SERVER
        .get_or_init(|| match PgCluster::start() {
            Ok(cluster) => Some(cluster),
            Err(error) => {
                eprintln!("could not start PostgreSQL: {error}");
                None
            }
        })
        .as_ref()
        .map(|cluster| cluster.url.clone())
}

/// A PostgreSQL cluster in a temp directory, run by a shell that shuts it down and
/// deletes it when this test process exits (its stdin, our pipe, closes).
struct PgCluster {
    url: String,
    _guard: Child,
}

impl PgCluster {
    fn start() -> Result<Self, String> {
        let bin = postgres_bin_dir().ok_or("no PostgreSQL server binaries found (set PG_BIN)")?;
        let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("credits-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let user = if as_root { "postgres" } else { "credits" };
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err("cannot chown the cluster directory to postgres".into());
            }
        }
        let run_as = |program: &Path| -> Command {
            if as_root {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            } else {
                Command::new(program)
            }
        };
        let data = dir.join("data");
        let output = run_as(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let script = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
             >{dir}/log 2>&1 & pid=$!; read _ignored; kill -INT $pid; wait $pid; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let guard = run_as(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        let started = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not become ready: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { url: format!("postgres://{user}@127.0.0.1:{port}"), _guard: guard })
    }
}

fn postgres_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    _database: TestDatabase,
}

/// Configuration for a test server over `database_url`, plus `extra` variables.
pub fn test_config_with(database_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("CREDITS_ADDR", "127.0.0.1:0".to_owned()),
        ("CREDITS_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ]);
    vars.extend(extra.iter().map(|(name, value)| (*name, (*value).to_owned())));
    Config::from_lookup(|name| vars.get(name).cloned()).expect("test config")
}

/// Configuration for a test server over `database_url`.
pub fn test_config(database_url: &str) -> Config {
    test_config_with(database_url, &[])
}

/// Starts a server on a fresh database, or `None` when the engine is unavailable.
pub async fn spawn_app(engine: Engine) -> Option<TestApp> {
    spawn_app_with(engine, &[]).await
}

/// Starts a server with extra configuration variables.
pub async fn spawn_app_with(engine: Engine, extra: &[(&str, &str)]) -> Option<TestApp> {
    spawn_app_tweaked(engine, extra, |_| {}).await
}

/// Starts a server with extra variables and settings no variable reaches (short timeouts).
pub async fn spawn_app_tweaked(
    engine: Engine,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let database = database(engine).await?;
    let mut config = test_config_with(&database.url, extra);
    tweak(&mut config);
    let app = Application::build(&config).await.expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    wait_until_ready(&client, &base).await;
    Some(TestApp { base, client, _database: database })
}

/// Polls `/readyz` (database up and, on PostgreSQL, listening for live events).
pub async fn wait_until_ready(client: &reqwest::Client, base: &str) {
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "server at {base} never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// A client for a server started elsewhere (a child process) over `database`.
    pub fn attach(base: String, database: TestDatabase) -> Self {
        Self { base, client: reqwest::Client::new(), _database: database }
    }

    /// The URL of this app's database.
    pub fn database_url(&self) -> String {
        self._database.url.clone()
    }

    /// A second server (replica) on this app's database; returns its base URL.
    pub async fn spawn_replica(&self) -> String {
        let app = Application::build(&test_config(&self._database.url)).await.expect("build replica");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        wait_until_ready(&self.client, &base).await;
        base
    }
}

/// A GraphQL response body.
pub type Body = Value;

impl TestApp {
    /// `POST /graphql` with an optional bearer token; returns the status and JSON body.
    pub async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Body) {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.expect("JSON body");
        (status, body)
    }

    /// A GraphQL call that must succeed; returns `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(token, query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A GraphQL call that must fail with `code`; returns the first error.
    pub async fn fails(&self, token: Option<&str>, query: &str, variables: Value, code: &str) -> Value {
        let (_, body) = self.post(token, query, variables).await;
        let error = body["errors"][0].clone();
        assert_eq!(error["extensions"]["code"], code, "expected {code}: {body}");
        error
    }

    /// Creates an organization as admin; returns its id.
    pub async fn create_org(&self, name: &str) -> String {
        let data = self
            .ok(
                Some(ADMIN_TOKEN),
                "mutation($name: String!) { createOrganization(input: { name: $name }) { id } }",
                json!({ "name": name }),
            )
            .await;
        data["createOrganization"]["id"].as_str().expect("id").to_owned()
    }

    /// Creates an API key for `org` as admin; returns its secret.
    pub async fn create_key(&self, org: &str) -> String {
        let data = self
            .ok(
                Some(ADMIN_TOKEN),
                "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"test\" }) { secret } }",
                json!({ "org": org }),
            )
            .await;
        data["createApiKey"]["secret"].as_str().expect("secret").to_owned()
    }

    /// Grants `amount` credits to `org` as admin; returns the new balance.
    pub async fn grant(&self, org: &str, amount: i64) -> i64 {
        let data = self
            .ok(
                Some(ADMIN_TOKEN),
                "mutation($org: ID!, $amount: Credits!) { grantCredits(input: { organizationId: $org, amount: $amount, description: \"test grant\" }) { balance { balance } } }",
                json!({ "org": org, "amount": amount }),
            )
            .await;
        data["grantCredits"]["balance"]["balance"].as_i64().expect("balance")
    }

    /// An organization with an API key and `credits` granted; returns (id, key).
    pub async fn funded_org(&self, name: &str, credits: i64) -> (String, String) {
        let org = self.create_org(name).await;
        let key = self.create_key(&org).await;
        if credits > 0 {
            self.grant(&org, credits).await;
        }
        (org, key)
    }

    /// The balance as the API returns it.
    pub async fn balance(&self, key: &str) -> i64 {
        let data = self.ok(Some(key), "{ creditBalance { balance } }", json!({})).await;
        data["creditBalance"]["balance"].as_i64().expect("balance")
    }

    /// The sum of every transaction amount of the organization, read page by page.
    pub async fn transaction_sum(&self, key: &str) -> (i64, usize) {
        let (mut sum, mut count, mut after) = (0i64, 0usize, Value::Null);
        loop {
            let data = self
                .ok(
                    Some(key),
                    "query($after: String) { creditTransactions(first: 100, after: $after) { edges { node { amount } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await;
            let connection = &data["creditTransactions"];
            for edge in connection["edges"].as_array().expect("edges") {
                sum += edge["node"]["amount"].as_i64().expect("amount");
                count += 1;
            }
            if connection["pageInfo"]["hasNextPage"] != true {
                return (sum, count);
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
    }
}
