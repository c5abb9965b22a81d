//! The operator command line against a real database file.

use std::process::{Command, Output};

/// Runs the `credits` command line on `database_url`.
pub(crate) fn credits(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_credits"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env_remove("CREDITS_ADMIN_TOKEN")
        .output()
        .expect("run credits")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn commands_print_only_their_result_even_at_the_default_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("quiet.db").display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_credits"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env_remove("RUST_LOG")
            .env_remove("CREDITS_ADMIN_TOKEN")
            .output()
            .expect("run credits")
    };
    let migrated = run(&["migrate"]);
    assert_eq!(String::from_utf8_lossy(&migrated.stdout), "migrated\n");
    assert_eq!(String::from_utf8_lossy(&migrated.stderr), "", "nothing but the result");
    let created = run(&["org", "create", "--name", "Quiet"]);
    assert!(String::from_utf8_lossy(&created.stdout).starts_with("org_"));
    assert_eq!(String::from_utf8_lossy(&created.stderr), "");
}

#[test]
fn operators_create_orgs_keys_and_grants_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cli.db").display());
    assert_eq!(stdout_lines(&credits(&url, &["migrate"])), vec!["migrated"]);

    let org = stdout_lines(&credits(&url, &["org", "create", "--name", "Acme"]));
    assert_eq!(org.len(), 1);
    assert!(org[0].starts_with("org_"));

    let created = credits(&url, &["api-key", "create", "--org", &org[0], "--name", "ci"]);
    let key = stdout_lines(&created);
    assert!(key[0].starts_with("key_") && key[1].starts_with("crk_"), "{key:?}");
    assert!(String::from_utf8_lossy(&created.stderr).contains("shown this once"));

    let granted =
        stdout_lines(&credits(&url, &["grant", "--org", &org[0], "--amount", "250", "--description", "welcome"]));
    assert!(granted[0].starts_with("ctx_"));
    assert_eq!(granted[1], "250");

    let json =
        stdout_lines(&credits(&url, &["--json", "grant", "--org", &org[0], "--amount", "5", "--description", "more"]));
    let value: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(value["balance"], 255);

    let revoked = stdout_lines(&credits(&url, &["api-key", "revoke", "--id", &key[0]]));
    assert_eq!(revoked, vec![key[0].clone()]);

    // Errors go to stderr with a non-zero exit.
    for args in [
        vec!["grant", "--org", "org_missing", "--amount", "5", "--description", "x"],
        vec!["grant", "--org", org[0].as_str(), "--amount", "0", "--description", "x"],
        vec!["api-key", "revoke", "--id", "key_missing"],
    ] {
        let output = credits(&url, &args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(output.stdout.is_empty());
        assert!(!output.stderr.is_empty());
    }
}

#[test]
fn a_bad_package_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("packages.toml");
    std::fs::write(&path, "[[package]]\nid = \"a\"\nname = \"A\"\ncredits = 0\nprice_amount = 1\n").unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_credits")).arg("schema").env("CREDITS_PACKAGES", &path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1") && stderr.contains("credits"), "{stderr}");
}

/// `credits` with no subcommand serves on a fresh SQLite file, and with
/// `CREDITS_LOG_FORMAT=json` logs one JSON object per line, each request in a span that
/// names its GraphQL operation and organization.
#[tokio::test]
async fn the_binary_serves_and_logs_requests_as_json() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("serve.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_credits"))
        .env("DATABASE_URL", &url)
        .env("CREDITS_ADDR", "127.0.0.1:0")
        .env("CREDITS_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("CREDITS_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn credits");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if lines_tx.send(parsed).is_err() {
                break;
            }
        }
    });
    let next_matching = |predicate: &dyn Fn(&serde_json::Value) -> bool| loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(30)).expect("log line");
        if predicate(&line) {
            return line;
        }
    };
    let serving = next_matching(&|line| line["fields"]["message"] == "credits is serving");
    let addr = serving["fields"]["addr"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&serde_json::json!({ "query": "mutation MakeOrg { createOrganization(input: { name: \"Logs\" }) { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let org = created["data"]["createOrganization"]["id"].as_str().unwrap().to_owned();
    client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&serde_json::json!({ "query": "query Balance($org: ID) { creditBalance(organizationId: $org) { balance } }", "variables": { "org": org } }))
        .send()
        .await
        .unwrap();
    let logged = next_matching(&|line| line["span"]["operation"] == "Balance");
    assert_eq!(logged["span"]["organization"], org.as_str(), "{logged}");
    assert_eq!(logged["span"]["name"], "request");
    child.kill().ok();
    child.wait().ok();
}
