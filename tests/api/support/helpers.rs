//! Test harness: a real server on 127.0.0.1:0 over a fresh database per test, on SQLite
//! (a temp file) or on a throw-away PostgreSQL cluster this harness starts itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use crate::pg_cluster::free_port;
use crate::pg_cluster::{Durability, PgSetup};
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

/// Every order of `0..n` (`n!` of them), for tests that deliver the same things in each.
pub fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
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
        let setup = PgSetup::init("shared")?;
        let script = format!(
            "{server} & pid=$!; read _ignored; kill -INT $pid; wait $pid; rm -rf {dir}",
            server = setup.server_command(Durability::Fast),
            dir = setup.dir.display(),
        );
        let guard = setup
            .run_as(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        setup.wait_ready(Duration::from_secs(30))?;
        Ok(Self { url: setup.base_url(), _guard: guard })
    }
}

/// A PostgreSQL cluster of one test's own, which the test may stop (as a crash would)
/// and start again on the same port. Stopped and deleted when dropped.
pub struct DedicatedPostgres {
    setup: PgSetup,
}

impl DedicatedPostgres {
    /// Starts a fresh cluster with durable commits, or `None` (with a loud note) when
    /// PostgreSQL is not available outside CI. In CI a missing PostgreSQL fails the test.
    pub fn start() -> Option<Self> {
        let started = PgSetup::init(&format!("own-{}", uuid_like())).and_then(|setup| {
            let cluster = Self { setup };
            cluster.start_again()?;
            Ok(cluster)
        });
        match started {
            Ok(cluster) => Some(cluster),
            Err(error) if in_ci() => panic!("PostgreSQL is required in CI but could not be started: {error}"),
            Err(error) => {
                skip_loudly(&format!("PostgreSQL is not available here ({error}); this test needs its own cluster"));
                None
            }
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.setup.base_url())
    }

    /// Creates database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let admin = Database::connect(self.url("postgres")).await.expect("connect to own cluster");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
        admin.close().await.ok();
        self.url(name)
    }

    /// Stops the server at once, as a crash would (`pg_ctl -m immediate stop`):
    /// connections drop, nothing is flushed politely, the next start recovers.
    pub fn stop(&self) {
        let output = self
            .setup
            .run_as(&self.setup.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.setup.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(output.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Starts the server again on the same port and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let output = self
            .setup
            .run_as(&self.setup.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.setup.data)
            .arg("-l")
            .arg(self.setup.dir.join("log"))
            .arg("-o")
            .arg(self.setup.server_options(Durability::DurableCommits))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !output.status.success() {
            let log = std::fs::read_to_string(self.setup.dir.join("log")).unwrap_or_default();
            return Err(format!("pg_ctl start failed: {} {log}", String::from_utf8_lossy(&output.stderr)));
        }
        self.setup.wait_ready(Duration::from_secs(60))
    }
}

impl Drop for DedicatedPostgres {
    fn drop(&mut self) {
        self.setup.stop_immediately();
        let _ = std::fs::remove_dir_all(&self.setup.dir);
    }
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
    Some(spawn_app_over(database, extra, tweak).await)
}

/// Starts a server over an existing (possibly empty) database at `url`, which the
/// caller owns (a [`DedicatedPostgres`], say).
pub async fn spawn_app_on(url: &str, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_over(TestDatabase { url: url.to_owned(), _dir: None }, extra, |_| {}).await
}

async fn spawn_app_over(database: TestDatabase, extra: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config_with(&database.url, extra);
    tweak(&mut config);
    let app = Application::build(&config).await.expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    wait_until_ready(&client, &base).await;
    TestApp { base, client, _database: database }
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
    /// A client for a server that runs elsewhere (a [`ServerProcess`]) over `database_url`,
    /// which the caller keeps alive.
    pub fn attach(base: &str, database_url: &str) -> Self {
        let database = TestDatabase { url: database_url.to_owned(), _dir: None };
        Self { base: base.to_owned(), client: reqwest::Client::new(), _database: database }
    }

    /// A client for a server started elsewhere (a child process) over `database`.
    pub fn attach_owning(base: String, database: TestDatabase) -> Self {
        Self { base, client: reqwest::Client::new(), _database: database }
    }

    /// The URL of this app's database.
    pub fn database_url(&self) -> String {
        self._database.url.clone()
    }

    /// A second server (replica) on this app's database; returns its base URL.
    pub async fn spawn_replica(&self) -> String {
        self.spawn_replica_with(&[]).await
    }

    /// A second server on this app's database with extra configuration variables.
    pub async fn spawn_replica_with(&self, extra: &[(&str, &str)]) -> String {
        let app = Application::build(&test_config_with(&self._database.url, extra)).await.expect("build replica");
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

/// What a report's sums are, computed here from the transactions themselves (the
/// contract's rule, independently of the server's): consumed, added, expired, refunded,
/// transactions.
pub fn usage_of(transactions: &[&Value]) -> [i64; 5] {
    let mut sums = [0i64; 5];
    for transaction in transactions {
        let amount = transaction["amount"].as_i64().expect("amount");
        match (transaction["kind"].as_str().expect("kind"), amount) {
            ("CONSUMPTION", _) => sums[0] -= amount,
            ("PURCHASE" | "GRANT", _) => sums[1] += amount,
            ("ADJUSTMENT", amount) if amount > 0 => sums[1] += amount,
            ("EXPIRY" | "VOID", _) => sums[2] -= amount,
            ("REFUND", _) => sums[3] -= amount,
            _ => {}
        }
        sums[4] += 1;
    }
    sums
}

/// A report's or bucket's sums, in [`usage_of`]'s order.
pub fn sums_of(value: &Value) -> [i64; 5] {
    ["consumed", "added", "expired", "refunded", "transactions"].map(|field| value[field].as_i64().expect(field))
}

impl TestApp {
    /// Every transaction of the token's organization (or `organization`, with the admin
    /// token), newest first, with the fields reports group by.
    pub async fn all_transactions(&self, token: &str, organization: Option<&str>) -> Vec<Value> {
        let (mut all, mut after) = (Vec::new(), Value::Null);
        loop {
            let data = self
                .ok(
                    Some(token),
                    "query($org: ID, $after: String) { creditTransactions(organizationId: $org, first: 100, after: $after) { edges { node { id kind amount createdAt referenceType apiKeyId clientSessionId } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "org": organization, "after": after }),
                )
                .await;
            let connection = &data["creditTransactions"];
            all.extend(connection["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()));
            if connection["pageInfo"]["hasNextPage"] != true {
                return all;
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
    }

    /// Checks that `creditUsage` over the whole history (daily, UTC), unsplit and split
    /// both ways, adds up to exactly what `creditTransactions` lists.
    pub async fn assert_usage_matches_history(&self, token: &str, organization: Option<&str>) {
        let history = self.all_transactions(token, organization).await;
        let from = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();
        let to = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        for (group_by, field) in
            [(None, None), (Some("REFERENCE_TYPE"), Some("referenceType")), (Some("API_KEY"), Some("apiKeyId"))]
        {
            let data = self
                .ok(
                    Some(token),
                    "query($org: ID, $from: DateTime!, $to: DateTime!, $by: UsageGroupBy) { creditUsage(organizationId: $org, from: $from, to: $to, interval: DAY, groupBy: $by) { buckets { group consumed added expired refunded transactions } totals { consumed added expired refunded transactions } } }",
                    json!({ "org": organization, "from": from, "to": to, "by": group_by }),
                )
                .await;
            let report = &data["creditUsage"];
            let everything: Vec<&Value> = history.iter().collect();
            assert_eq!(sums_of(&report["totals"]), usage_of(&everything), "totals, grouped by {group_by:?}");
            let Some(field) = field else { continue };
            let mut by_group: HashMap<Option<String>, [i64; 5]> = HashMap::new();
            for bucket in report["buckets"].as_array().expect("buckets") {
                let sums = by_group.entry(bucket["group"].as_str().map(str::to_owned)).or_default();
                for (sum, add) in sums.iter_mut().zip(sums_of(bucket)) {
                    *sum += add;
                }
            }
            let groups: std::collections::BTreeSet<Option<String>> =
                history.iter().map(|transaction| transaction[field].as_str().map(str::to_owned)).collect();
            for group in groups {
                let members: Vec<&Value> =
                    history.iter().filter(|transaction| transaction[field].as_str() == group.as_deref()).collect();
                assert_eq!(
                    by_group.get(&group).copied().unwrap_or_default(),
                    usage_of(&members),
                    "group {group:?} of {field}"
                );
            }
        }
    }
}

/// The real `credits` binary serving over a database, as a child process that a test
/// may kill (SIGKILL), signal and start again on the same address.
pub struct ServerProcess {
    child: Child,
    database_url: String,
    port: u16,
    extra: Vec<(String, String)>,
    log: tempfile::NamedTempFile,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl ServerProcess {
    /// Starts `credits serve` on a free port over `database_url` (rate limits off, plus
    /// `extra` variables) and waits until `/readyz` answers 200.
    pub async fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut server = Self {
            child: Self::spawn(database_url, port, &extra, log.path()),
            database_url: database_url.to_owned(),
            port,
            extra,
            log,
            base: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready().await;
        server
    }

    fn spawn(database_url: &str, port: u16, extra: &[(String, String)], log: &Path) -> Child {
        // Appending, so every run's lines stay for a failure message.
        let log = std::fs::OpenOptions::new().append(true).open(log).expect("open log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_credits"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("CREDITS_ADDR", format!("127.0.0.1:{port}"))
            .env("CREDITS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CREDITS_RATE_LIMIT", "off")
            .env("RUST_LOG", "warn")
            .env_remove("CREDITS_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in extra {
            command.env(name, value);
        }
        command.spawn().expect("spawn credits")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, mid-request, with no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`TERM`, `INT`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {} failed", self.pid());
    }

    /// Starts the binary again, same database, same address, and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.database_url, self.port, &self.extra, self.log.path());
        self.wait_ready().await;
    }

    /// The exit status, if the process ends within `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("credits exited during start-up with {status}:\n{}", self.log());
            }
            let ready = client.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "credits never became ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
