//! Every benchmark still runs: a smoke run of each example with tiny arguments (`cargo
//! test` builds the examples beside the server binary they drive), so none stops
//! working unnoticed. The numbers of a debug build mean nothing; only that each runs to
//! the end and reports. (`bench_usage` has its smoke run in `usage.rs`.)

use std::process::Command;

/// Runs example `name` with `args` and `env`; its standard output, once it succeeded.
fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_credits"));
    let example = binary.parent().expect("target dir").join("examples").join(name);
    if !example.exists() {
        assert!(!crate::helpers::in_ci(), "{} was not built", example.display());
        crate::helpers::skip_loudly(&format!("the {name} example is not built here; its smoke run was skipped"));
        return None;
    }
    let mut command = Command::new(&example);
    command.args(args).env_remove("DATABASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    // Never a hang: a benchmark that does not finish in time fails the test. Its output
    // goes to files, so that no pipe fills while it runs.
    let (out, err) = (tempfile::tempfile().expect("temp file"), tempfile::tempfile().expect("temp file"));
    let mut child = command
        .stdout(out.try_clone().expect("clone"))
        .stderr(err.try_clone().expect("clone"))
        .spawn()
        .unwrap_or_else(|error| panic!("run {name}: {error}"));
    let read = |mut file: &std::fs::File| {
        use std::io::{Read, Seek};
        let mut text = String::new();
        file.seek(std::io::SeekFrom::Start(0)).expect("seek");
        file.read_to_string(&mut text).expect("read");
        text
    };
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish in 240 s:\n{}\n{}", read(&out), read(&err));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stdout = read(&out);
    assert!(status.success(), "{name} failed:\n{stdout}\n{}", read(&err));
    Some(stdout)
}
/// Idle subscribers over client sessions (more than one session's 32 WebSockets), then
/// latency and the hot row.
#[test]
fn the_live_benchmark_runs() {
    let Some(stdout) = run_example("bench_live", &["70", "20"], &[]) else { return };
    assert!(stdout.contains("idle subscribers: 70 held"), "{stdout}");
    assert!(stdout.contains("consume -> event (20 sequential consumes"), "{stdout}");
    assert!(stdout.contains("final balance exact"), "{stdout}");
}

#[test]
fn the_fairness_benchmark_runs() {
    let Some(stdout) = run_example("bench_fair", &["1"], &[]) else { return };
    assert!(stdout.contains("fairness:"), "{stdout}");
}

/// One mode of the throughput benchmark, one second a run (`BENCH_ONLY=mode`), whose
/// output must hold `row(engine)` for SQLite and, in CI, for PostgreSQL too.
fn throughput_mode(mode: &str, row: impl Fn(&str) -> String) -> Option<String> {
    let stdout = run_example("bench_throughput", &["1"], &[("BENCH_ONLY", mode)])?;
    let engines: &[&str] = if crate::helpers::in_ci() { &["SQLite", "PostgreSQL"] } else { &["SQLite"] };
    for engine in engines {
        assert!(stdout.contains(&row(engine)), "{}: {stdout}", row(engine));
    }
    Some(stdout)
}

/// The throughput benchmark's metrics mode: the bare limit, then both engines with and
/// without `/metrics`, every answer checked.
#[test]
fn the_throughput_benchmark_runs() {
    let row = |engine: &str| format!("| {engine}, metrics on: creditBalance reads |");
    let Some(stdout) = throughput_mode("metrics", row) else { return };
    assert!(stdout.contains("| limit: bare async-graphql-axum"), "{stdout}");
    assert!(stdout.contains("/s before the scenarios, ") && stdout.contains("/s after them"), "{stdout}");
}

/// The reads against their anchor (async-graphql and one sqlx `SELECT`), both engines.
#[test]
fn the_read_anchor_benchmark_runs() {
    let row = |engine: &str| format!("| {engine}: anchor: async-graphql + one sqlx SELECT per read |");
    let Some(stdout) = throughput_mode("reads", row) else { return };
    assert!(stdout.contains("SQLite: creditBalance reads") && stdout.contains("of the one-SELECT anchor"), "{stdout}");
}

/// The grant storm without and with a webhook endpoint, every event delivered.
#[test]
fn the_webhook_benchmark_runs() {
    let Some(stdout) = throughput_mode("webhooks", |engine| format!("{engine}: webhooks:")) else { return };
    let line = stdout.lines().find(|line| line.starts_with("SQLite: webhooks:")).unwrap_or_else(|| panic!("{stdout}"));
    // "… D deliveries (E distinct events) for the G grants answered …": every answered
    // grant's event heard.
    let counts: Vec<u64> = line
        .split(" grants answered")
        .next()
        .unwrap_or_default()
        .split([' ', '('])
        .filter_map(|word| word.parse().ok())
        .collect();
    let [.., deliveries, distinct, grants] = counts[..] else { panic!("{line}") };
    assert!(deliveries >= distinct && distinct >= grants && grants > 0, "{line}");
}
