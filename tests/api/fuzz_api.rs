//! Schemathesis (PyPI) fuzzes the live server from its introspected GraphQL schema, as
//! an organization's API key and as the admin token: no 5xx, no `INTERNAL_SERVER_ERROR`,
//! no SQL or panic text in any answer: checked by our own schemathesis check
//! (`tests/fuzz/schemathesis_hooks.py`, since schemathesis's `not_a_server_error` counts
//! every GraphQL error, `FORBIDDEN` included) and again here on every exchange of its HAR
//! report.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, Engine, in_ci, skip_loudly, spawn_app_with};
use crate::on_both_engines;

on_both_engines!(fuzzed_queries_and_mutations_never_fail_on_the_server);

/// Our scalars (`Credits`, `DateTime`) and our check (`credits_contract`).
const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/schemathesis_hooks.py");
/// The version `.ci/run` installs.
const PINNED: &str = "4.32.5";
/// Test cases per operation and caller: the whole run stays well under two minutes.
const EXAMPLES: &str = "30";

/// Text that would mean internal details reached a client (the hooks' check reads this
/// list too, through `CREDITS_LEAKS`).
const LEAKS: &[&str] = &[
    "INTERNAL_SERVER_ERROR",
    "panicked at",
    "RUST_BACKTRACE",
    "stack backtrace",
    "sqlx",
    "sea_orm",
    "DbErr",
    "SQLSTATE",
    "SQLITE_",
    "syntax error at or near",
    "duplicate key value",
    "violates ",
    "constraint failed",
    "no such table",
    "no such column",
    "error returned from database",
    "SELECT ",
    "INSERT INTO",
    "UPDATE \"",
];

/// The `schemathesis` command, if installed. Outside CI a missing one skips the test
/// loudly; in CI it fails.
fn schemathesis() -> Option<&'static str> {
    let found = Command::new("schemathesis").arg("--version").output().is_ok_and(|output| output.status.success());
    if found {
        return Some("schemathesis");
    }
    if in_ci() {
        panic!("schemathesis is not installed (pip install 'schemathesis=={PINNED}')");
    }
    skip_loudly(&format!("schemathesis is not installed; run `pip install 'schemathesis=={PINNED}'`"));
    None
}

async fn fuzzed_queries_and_mutations_never_fail_on_the_server(engine: Engine) {
    let Some(schemathesis) = schemathesis() else { return };
    let Some(app) = spawn_app_with(engine, &[("CREDITS_RATE_LIMIT", "off")]).await else { return };
    let (_, api_key) = app.funded_org("Fuzzed", 1_000).await;
    let reports = tempfile::tempdir().expect("report dir");
    for (caller, token) in [("api-key", api_key.as_str()), ("admin", ADMIN_TOKEN)] {
        let har = reports.path().join(format!("{caller}.har"));
        let url = format!("{}/graphql", app.base);
        let auth = format!("Authorization: Bearer {token}");
        let report_dir = reports.path().join(caller);
        let workdir = reports.path().to_owned();
        let output = tokio::task::spawn_blocking({
            let har = har.clone();
            move || {
                Command::new(schemathesis)
                    .args(["--no-color", "run", &url, "--header", &auth])
                    .args(["--checks", "credits_contract", "--max-examples", EXAMPLES, "--seed", "1"])
                    .args(["--workers", "2", "--request-timeout", "10", "--max-failures", "20"])
                    .args(["--report", "har", "--report-har-path"])
                    .arg(&har)
                    .arg("--report-dir")
                    .arg(&report_dir)
                    .env("SCHEMATHESIS_HOOKS", HOOKS)
                    .env("CREDITS_LEAKS", LEAKS.join("\n"))
                    // It keeps a cache (`.schemathesis/`) in its working directory.
                    .current_dir(&workdir)
                    .output()
                    .expect("run schemathesis")
            }
        })
        .await
        .expect("schemathesis finished");
        let log = format!(
            "schemathesis as {caller}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let exchanges = check_report(&har, caller);
        eprintln!("schemathesis as {caller} on {engine:?}: {exchanges} exchanges checked");
        assert!(output.status.success(), "{log}");
        assert!(exchanges >= 50, "schemathesis exercised the API ({exchanges} exchanges): {log}");
    }
}

/// Checks every response in a HAR report; returns how many there were.
fn check_report(har: &Path, caller: &str) -> usize {
    let text = std::fs::read_to_string(har).unwrap_or_else(|e| panic!("no HAR report at {}: {e}", har.display()));
    let report: Value = serde_json::from_str(&text).expect("HAR is JSON");
    let entries = report["log"]["entries"].as_array().expect("HAR entries");
    for entry in entries {
        let request = entry["request"]["postData"]["text"].as_str().or(entry["request"]["url"].as_str()).unwrap_or("");
        let status = entry["response"]["status"].as_u64().unwrap_or(0);
        let body = entry["response"]["content"]["text"].as_str().unwrap_or("");
        assert!(status < 500, "as {caller}: HTTP {status} for {request}\n-> {body}");
        // Plain JSON, not base64: else the checks below would see nothing.
        assert!(body.starts_with('{') || body.starts_with('['), "as {caller}: a body the checks can read: {entry}");
        for leak in LEAKS {
            assert!(!body.contains(leak), "as {caller}: {leak:?} in the answer to {request}\n-> {body}");
        }
    }
    entries.len()
}
