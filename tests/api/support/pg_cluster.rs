//! Throw-away PostgreSQL clusters from the server binaries on this machine
//! (`/usr/lib/postgresql/*/bin`, or `PG_BIN`), run as the `postgres` user when we are
//! root. Shared by the test harness and the benchmarks (`#[path]`), so it depends on
//! nothing else of either.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much a cluster's commits survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Nothing is flushed (most tests: speed, not durability, is under test).
    Fast,
    /// Commits reach the OS before they are acknowledged (survives PostgreSQL crashing).
    DurableCommits,
    /// PostgreSQL's defaults: commits are on disk before they are acknowledged.
    Production,
}

/// An initialized (not yet running) cluster directory: who runs it and where its data is.
pub struct PgSetup {
    pub bin: PathBuf,
    pub as_root: bool,
    pub user: &'static str,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
}

impl PgSetup {
    /// Runs `initdb` in a fresh temp directory named after `label` and picks a free port.
    pub fn init(label: &str) -> Result<Self, String> {
        let bin = postgres_bin_dir().ok_or("no PostgreSQL server binaries found (set PG_BIN)")?;
        let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("credits-pg-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let user = if as_root { "postgres" } else { "credits" };
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err("cannot chown the cluster directory to postgres".into());
            }
        }
        let data = dir.join("data");
        let setup = Self { bin, as_root, user, dir, data, port: free_port() };
        let output = setup
            .run_as(&setup.bin.join("initdb"))
            .arg("-D")
            .arg(&setup.data)
            .args(["-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        Ok(setup)
    }

    /// A command that runs `program` as the cluster's owner (`postgres` when we are root).
    pub fn run_as(&self, program: &Path) -> Command {
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// The server's own options, for `postgres` or `pg_ctl -o`.
    pub fn server_options(&self, durability: Durability) -> String {
        // fsync=off is safe for a crash of PostgreSQL alone (the OS keeps its writes);
        // synchronous_commit=off is not: a commit could be acknowledged and then lost.
        let (fsync, synchronous_commit) = match durability {
            Durability::Fast => ("off", "off"),
            Durability::DurableCommits => ("off", "on"),
            Durability::Production => ("on", "on"),
        };
        format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c synchronous_commit={synchronous_commit} \
             -c full_page_writes={fsync} -c max_connections=400",
            port = self.port,
            dir = self.dir.display(),
        )
    }

    /// The shell command that runs the server in the foreground, logging to `log`.
    pub fn server_command(&self, durability: Durability) -> String {
        format!(
            "{postgres} -D {data} {options} >{dir}/log 2>&1",
            postgres = self.bin.join("postgres").display(),
            data = self.data.display(),
            options = self.server_options(durability),
            dir = self.dir.display(),
        )
    }

    /// Stops the server at once, as a crash would, if it runs; errors are ignored (for
    /// cleaning up).
    pub fn stop_immediately(&self) {
        let _ = self
            .run_as(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits until the server accepts connections.
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", self.user])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if started.elapsed() > within {
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not become ready: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}", self.user, self.port)
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

pub fn postgres_bin_dir() -> Option<PathBuf> {
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
