//! PostgreSQL failover as deployments run it: a primary with a synchronous standby
//! (`synchronous_standby_names`), HAProxy in front, the server connected through
//! HAProxy. Under a consume load with idempotency keys the primary is killed
//! (`pg_ctl -m immediate`) and the standby promoted: every acknowledged consume is on
//! the new primary, no answer is a 500, and the same server serves again within seconds,
//! without a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;

use crate::helpers::{in_ci, skip_loudly, spawn_app_on};
use crate::load::{Load, Outcome, assert_charged_exactly_once};
use crate::pg_cluster::{Durability, PgSetup, free_port, postgres_bin_dir};

const GRANTED: i64 = 10_000_000;
/// How soon after the primary dies the server must answer a consume again.
const BACK_WITHIN: Duration = Duration::from_secs(15);

/// A PostgreSQL server process of `setup`, stopped at once when dropped.
struct Running {
    setup: PgSetup,
    process: Child,
}

impl Running {
    fn start(setup: PgSetup, extra: &str) -> Result<Self, String> {
        let script = format!(
            "exec {postgres} -D {data} {options} {extra} >{dir}/log 2>&1",
            postgres = setup.bin.join("postgres").display(),
            data = setup.data.display(),
            options = setup.server_options(Durability::DurableCommits),
            dir = setup.dir.display(),
        );
        let process = setup.run_as(Path::new("sh")).args(["-c", &script]).spawn().map_err(|e| e.to_string())?;
        setup.wait_ready(Duration::from_secs(30))?;
        Ok(Self { setup, process })
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let output = self
            .setup
            .run_as(&self.setup.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.setup.data)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.setup.stop_immediately();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.setup.dir);
    }
}

/// A standby of `primary`, copied with `pg_basebackup` and streaming from it as
/// `standby1` (the name the primary waits for).
fn standby_of(primary: &PgSetup) -> Result<PgSetup, String> {
    let dir = std::env::temp_dir().join(format!("credits-pg-{}-standby", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if primary.as_root {
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map_err(|e| e.to_string())?;
    }
    let standby = PgSetup {
        bin: primary.bin.clone(),
        as_root: primary.as_root,
        user: primary.user,
        data: dir.join("data"),
        dir,
        port: free_port(),
    };
    let output = standby
        .run_as(&standby.bin.join("pg_basebackup"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            primary.user,
            "-X",
            "stream",
            "-R",
            "--no-sync",
        ])
        .arg("-D")
        .arg(&standby.data)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("pg_basebackup: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let conninfo = format!(
        "\nprimary_conninfo = 'host=127.0.0.1 port={} user={} application_name=standby1'\n",
        primary.port, primary.user
    );
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(standby.data.join("postgresql.auto.conf"))
        .and_then(|mut file| file.write_all(conninfo.as_bytes()))
        .map_err(|e| e.to_string())?;
    Ok(standby)
}

/// Debian's HAProxy, on the `PATH` or where its package puts it.
fn haproxy_binary() -> Option<std::path::PathBuf> {
    ["haproxy", "/usr/sbin/haproxy"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|binary| Command::new(binary).arg("-v").output().is_ok_and(|out| out.status.success()))
}

/// HAProxy in front of both: the primary while its port answers, else the standby.
fn haproxy(binary: &Path, dir: &Path, primary: u16, standby: u16) -> Result<(Child, u16), String> {
    let port = free_port();
    let config = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
         listen postgres\n  bind 127.0.0.1:{port}\n\
         \x20 default-server inter 200ms fall 2 rise 2 on-marked-down shutdown-sessions\n\
         \x20 server primary 127.0.0.1:{primary} check\n\
         \x20 server standby 127.0.0.1:{standby} check backup\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("haproxy: {e}"))?;
    Ok((child, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_behind_haproxy_loses_no_acknowledged_consume() {
    let (Some(_), Some(haproxy_binary)) = (postgres_bin_dir(), haproxy_binary()) else {
        assert!(!in_ci(), "the failover test needs PostgreSQL and HAProxy (Debian package haproxy)");
        skip_loudly("PostgreSQL or HAProxy is not installed: the failover test is skipped");
        return;
    };
    let replication = "-c wal_level=replica -c max_wal_senders=5 -c hot_standby=on \
                       -c synchronous_standby_names=standby1 -c synchronous_commit=on";
    let primary = Running::start(PgSetup::init("primary").expect("initdb"), replication).expect("primary");
    let standby = Running::start(standby_of(&primary.setup).expect("standby"), "").expect("standby");
    let admin = sea_orm::Database::connect(format!("{}/postgres", primary.setup.base_url())).await.expect("connect");
    let started = Instant::now();
    loop {
        let row = admin
            .query_one_raw(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'",
            ))
            .await
            .expect("pg_stat_replication");
        if row.and_then(|row| row.try_get::<String>("", "sync_state").ok()).as_deref() == Some("sync") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the standby never became synchronous");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.execute_unprepared("CREATE DATABASE credits").await.expect("create database");
    admin.close().await.ok();
    let (mut proxy, proxy_port) =
        haproxy(&haproxy_binary, &primary.setup.dir, primary.setup.port, standby.setup.port).expect("haproxy");
    let through_proxy = format!("postgres://{}@127.0.0.1:{proxy_port}/credits", primary.setup.user);
    let app = spawn_app_on(&through_proxy, &[("CREDITS_RATE_LIMIT", "off")]).await;
    let (org, api_key) = app.funded_org("Failover", GRANTED).await;

    let load = Load::start(&app.base, &api_key, 6, Duration::from_secs(90));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    primary.setup.stop_immediately();
    let killed = Instant::now();
    standby.pg_ctl(&["promote", "-w"]).expect("promote the standby");
    let promoted_in = killed.elapsed();
    // The same server, unrestarted, answers a consume again.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
    let back = async {
        let mut n = 0;
        loop {
            let attempt = crate::load::attempt(&http, &app.base, &api_key, &format!("probe-{n}"), 1).await;
            if matches!(attempt.outcome, Outcome::Acknowledged { .. }) {
                return killed.elapsed();
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let back_in = tokio::time::timeout(BACK_WITHIN, back).await.expect("serving again within 15 s of the kill");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (mut acknowledged, attempts) = load.finish().await;
    let unavailable = attempts.iter().filter(|a| matches!(a.outcome, Outcome::Unavailable(_))).count();
    let no_answer: Vec<_> = attempts.iter().filter(|a| matches!(a.outcome, Outcome::NoAnswer(_))).collect();
    eprintln!(
        "failover: {} acknowledged, {} attempts, {unavailable} SERVICE_UNAVAILABLE, promoted in {promoted_in:?}, serving again {back_in:?} after the kill",
        acknowledged.len(),
        attempts.len()
    );
    assert!(no_answer.is_empty(), "the server always answered: {no_answer:?}");
    // Every acknowledged consume is on the new primary, once; the probes' charges
    // (acknowledged or not: each tried a fresh key) count with them.
    let new_primary = format!("{}/credits", standby.setup.base_url());
    let db = sea_orm::Database::connect(&new_primary).await.expect("connect to the new primary");
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let probes = entity::credit_transaction::Entity::find()
        .filter(entity::credit_transaction::Column::IdempotencyKey.starts_with("probe-"))
        .all(&db)
        .await
        .expect("probes");
    db.close().await.ok();
    assert!(!probes.is_empty(), "the probe that answered is on the new primary");
    for probe in probes {
        let key = probe.idempotency_key.clone().expect("key");
        acknowledged.insert(key, crate::load::Acknowledged { amount: 1, transaction_id: probe.id });
    }
    assert_charged_exactly_once(&new_primary, &org, GRANTED, &acknowledged).await;
    let _ = proxy.kill();
    let _ = proxy.wait();
}
