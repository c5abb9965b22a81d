//! Usage reports (`creditUsage`) and the transaction export (`GET /export/transactions`):
//! reports add up to exactly what the history lists, for every interval and grouping;
//! days follow daylight saving; exports stream the ledger row for row, in constant
//! memory, only to whom may read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use credits::ledger::{
    Amount, ChangeRequest, Clock, ConsumeRequest, GrantRequest, Ledger, TransactionKind, UsageGroupBy, UsageInterval,
    UsageQuery,
};
use serde_json::{Value, json};

use crate::fake_stripe::{event, paid_session, refunded_charge};
use crate::helpers::{ADMIN_TOKEN, Engine, ServerProcess, database, spawn_app, sums_of, usage_of};
use crate::on_both_engines;
use crate::purchases::{metadata, stripe_app};

on_both_engines!(
    reports_add_up_to_the_history_for_every_interval_and_grouping,
    days_follow_daylight_saving_and_any_range_is_exact,
    bad_report_arguments_are_refused,
    an_export_is_the_ledger_row_for_row_in_constant_memory,
    exports_are_authorized_like_graphql,
    history_written_before_reports_is_in_them_after_the_upgrade,
);

const USAGE: &str = "query($org: ID, $from: DateTime!, $to: DateTime!, $interval: UsageInterval!, $zone: String, $by: UsageGroupBy) { creditUsage(organizationId: $org, from: $from, to: $to, interval: $interval, timeZone: $zone, groupBy: $by) { from to interval timeZone buckets { start group consumed added expired refunded transactions } totals { consumed added expired refunded transactions } } }";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("instant")
}

async fn reports_add_up_to_the_history_for_every_interval_and_grouping(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Reports", 0).await;
    // Grants (one expiring in a second), consumes by the key and by a session, a hold
    // captured, a voided lot, a purchase and its partial refund.
    app.grant(&org, 1_000).await;
    let expiring = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($org: ID!, $at: DateTime) { grantCredits(input: { organizationId: $org, amount: 40, description: \"trial\", priority: 100, expiresAt: $at }) { lot { id } } }",
            json!({ "org": org, "at": (Utc::now() + Duration::seconds(1)).to_rfc3339() }),
        )
        .await;
    assert!(expiring["grantCredits"]["lot"]["id"].is_string());
    let voided = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 25, description: \"mistake\", category: PAID, priority: 99 }) { lot { id } } }",
            json!({ "org": org }),
        )
        .await;
    let lot = voided["grantCredits"]["lot"]["id"].clone();
    app.ok(
        Some(ADMIN_TOKEN),
        "mutation($id: ID!) { voidCreditLot(id: $id, description: \"oops\") { lot { status } } }",
        json!({ "id": lot }),
    )
    .await;
    let mut key_id = None;
    for (amount, reference) in [(7, Some("ai_image")), (11, Some("ai_image")), (13, Some("llm_call")), (2, None)] {
        let data = app
            .ok(
                Some(&key),
                "mutation($amount: Credits!, $ref: String) { consumeCredits(input: { amount: $amount, description: \"use\", referenceType: $ref }) { transaction { apiKeyId clientSessionId } } }",
                json!({ "amount": amount, "ref": reference }),
            )
            .await;
        let transaction = &data["consumeCredits"]["transaction"];
        assert!(transaction["clientSessionId"].is_null());
        key_id = transaction["apiKeyId"].as_str().map(str::to_owned);
        assert!(key_id.as_deref().is_some_and(|id| id.starts_with("key_")), "{transaction}");
    }
    let session = app
        .ok(Some(&key), "mutation { createClientSession(input: { scopes: [READ, CONSUME] }) { id token } }", json!({}))
        .await["createClientSession"]
        .clone();
    let consumed = app
        .ok(
            session["token"].as_str(),
            "mutation { consumeCredits(input: { amount: 5, description: \"browser\", referenceType: \"export\" }) { transaction { apiKeyId clientSessionId } } }",
            json!({}),
        )
        .await;
    let recorded = &consumed["consumeCredits"]["transaction"];
    assert_eq!(recorded["apiKeyId"].as_str(), key_id.as_deref(), "a session's key is its apiKeyId");
    assert_eq!(recorded["clientSessionId"], session["id"]);
    let hold = app
        .ok(
            Some(&key),
            "mutation { createHold(input: { amount: 30, description: \"render\", referenceType: \"render\" }) { hold { id } } }",
            json!({}),
        )
        .await["createHold"]["hold"]["id"]
        .clone();
    let captured = app
        .ok(
            Some(&key),
            "mutation($id: ID!) { captureHold(input: { id: $id, amount: 20 }) { transaction { kind amount referenceType apiKeyId } } }",
            json!({ "id": hold }),
        )
        .await;
    let capture = &captured["captureHold"]["transaction"];
    assert_eq!((capture["amount"].as_i64(), capture["referenceType"].as_str()), (Some(-20), Some("render")));
    assert_eq!(capture["apiKeyId"].as_str(), key_id.as_deref());
    let (checkout, purchase) = app.start_purchase(&key, "credits_starter").await;
    let paid = paid_session(&checkout, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_usage_1");
    assert_eq!(app.webhook(&event("evt_u1", "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.webhook(&event("evt_u2", "charge.refunded", refunded_charge("pi_usage_1", 999, 333))).await, 200);
    // The trial lot expires (written by the sweeper within a second or two).
    let mut expired = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let history = app.all_transactions(&key, None).await;
        if history.iter().any(|transaction| transaction["kind"] == "EXPIRY") {
            expired = true;
            break;
        }
    }
    assert!(expired, "the trial lot expired");

    let history = app.all_transactions(&key, None).await;
    let kinds: std::collections::BTreeSet<&str> = history.iter().filter_map(|t| t["kind"].as_str()).collect();
    for kind in ["GRANT", "CONSUMPTION", "EXPIRY", "VOID", "PURCHASE", "REFUND"] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    let admin_grant = history.iter().find(|t| t["kind"] == "GRANT").expect("grant");
    assert!(admin_grant["apiKeyId"].is_null() && admin_grant["clientSessionId"].is_null(), "{admin_grant}");

    let now = Utc::now();
    let ranges = [
        ("HOUR", now - Duration::hours(30), now + Duration::hours(2)),
        ("DAY", now - Duration::days(40), now + Duration::days(3)),
        ("WEEK", now - Duration::weeks(10), now + Duration::weeks(2)),
        ("MONTH", now - Duration::days(400), now + Duration::days(40)),
    ];
    for (interval, from, to) in ranges {
        for (group_by, field) in
            [(None, None), (Some("REFERENCE_TYPE"), Some("referenceType")), (Some("API_KEY"), Some("apiKeyId"))]
        {
            for zone in ["UTC", "Asia/Kathmandu", "America/St_Johns"] {
                let data = app
                    .ok(
                        Some(&key),
                        USAGE,
                        json!({ "from": from.to_rfc3339(), "to": to.to_rfc3339(), "interval": interval, "zone": zone, "by": group_by }),
                    )
                    .await;
                let report = &data["creditUsage"];
                assert_eq!(report["interval"], interval);
                assert_eq!(report["timeZone"], zone);
                let all: Vec<&Value> = history.iter().collect();
                let what = format!("{interval} in {zone} by {group_by:?}");
                assert_eq!(sums_of(&report["totals"]), usage_of(&all), "totals, {what}");
                let buckets = report["buckets"].as_array().expect("buckets");
                // Every bucket present, in order, each transaction in the one holding it.
                let starts: Vec<DateTime<Utc>> =
                    buckets.iter().map(|bucket| at(bucket["start"].as_str().expect("start"))).collect();
                assert!(starts.windows(2).all(|pair| pair[0] <= pair[1]), "ordered, {what}");
                assert_eq!(starts[0], from.with_nanosecond_floor(), "the first bucket starts at from, {what}");
                let mut distinct = starts.clone();
                distinct.dedup();
                let groups = buckets.len() / distinct.len();
                assert_eq!(buckets.len(), distinct.len() * groups, "each group has every bucket, {what}");
                let mut sum = [0i64; 5];
                for (index, bucket) in buckets.iter().enumerate() {
                    let start = starts[index];
                    let end = distinct.iter().find(|next| **next > start).copied().unwrap_or(to);
                    let members: Vec<&Value> = history
                        .iter()
                        .filter(|t| {
                            let created = at(t["createdAt"].as_str().expect("createdAt"));
                            let group = field.map(|field| t[field].as_str());
                            created >= start
                                && created < end
                                && group.is_none_or(|group| group == bucket["group"].as_str())
                        })
                        .collect();
                    assert_eq!(sums_of(bucket), usage_of(&members), "bucket {start}, {what}");
                    for (total, add) in sum.iter_mut().zip(sums_of(bucket)) {
                        *total += add;
                    }
                }
                assert_eq!(sum, usage_of(&all), "buckets add up to the totals, {what}");
            }
        }
    }
    app.assert_usage_matches_history(&key, None).await;
    // Another organization's report sees none of it.
    let (_, other) = app.funded_org("Elsewhere", 0).await;
    let data = app
        .ok(Some(&other), USAGE, json!({ "from": (now - Duration::days(1)).to_rfc3339(), "to": (now + Duration::days(1)).to_rfc3339(), "interval": "DAY" }))
        .await;
    assert_eq!(sums_of(&data["creditUsage"]["totals"]), [0; 5]);
    app.fails(
        Some(&other),
        USAGE,
        json!({ "org": org, "from": now.to_rfc3339(), "to": (now + Duration::days(1)).to_rfc3339(), "interval": "DAY" }),
        "FORBIDDEN",
    )
    .await;
}

/// Truncation to whole milliseconds, as the API's `DateTime` writes instants.
trait Millis {
    fn with_nanosecond_floor(self) -> Self;
}

impl Millis for DateTime<Utc> {
    fn with_nanosecond_floor(self) -> Self {
        DateTime::from_timestamp_millis(self.timestamp_millis()).expect("instant")
    }
}

/// A ledger over `url` whose clock the test sets, in seconds since 2026-01-01.
async fn ledger_with_clock(url: &str) -> (Ledger, Arc<AtomicI64>) {
    let db = credits::db::connect(url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    let seconds = Arc::new(AtomicI64::new(0));
    let read = seconds.clone();
    let base = at("2026-01-01T00:00:00Z");
    let clock = Clock::from_fn(move || base + Duration::seconds(read.load(Ordering::SeqCst)));
    (Ledger::new(db).with_clock(clock), seconds)
}

async fn days_follow_daylight_saving_and_any_range_is_exact(engine: Engine) {
    let Some(database) = database(engine).await else {
        return;
    };
    let (ledger, clock) = ledger_with_clock(&database.url).await;
    let set = |instant: &str| clock.store((at(instant) - at("2026-01-01T00:00:00Z")).num_seconds(), Ordering::SeqCst);
    let org = ledger.create_organization("Berlin", None).await.expect("organization").id;
    let amount = |credits| Amount::parse(credits).expect("amount");
    set("2026-03-20T00:00:00Z");
    ledger
        .grant(GrantRequest::new(org.clone(), amount(1_000_000), "seed".into(), None).expect("grant"))
        .await
        .expect("granted");
    // Consumes every 37 minutes from 2026-03-27 to 2026-04-01 and 2026-10-23 to
    // 2026-10-29 (Berlin's two changes), with a few reference types.
    let mut instants = Vec::new();
    for (start, end) in
        [("2026-03-27T00:00:00Z", "2026-04-01T00:00:00Z"), ("2026-10-23T00:00:00Z", "2026-10-29T00:00:00Z")]
    {
        let mut instant = at(start);
        while instant < at(end) {
            instants.push(instant);
            instant += Duration::minutes(37);
        }
    }
    for (index, instant) in instants.iter().enumerate() {
        clock.store((*instant - at("2026-01-01T00:00:00Z")).num_seconds(), Ordering::SeqCst);
        let reference = ["a", "b", "c"][index % 3].to_owned();
        let request =
            ConsumeRequest::new(org.clone(), amount(1 + (index as i64 % 5)), "use".into(), Some(reference), None, None)
                .expect("consume");
        ledger.consume(request).await.expect("consumed");
    }
    // A lot granted and voided among them, on the day clocks go forward.
    set("2026-03-29T00:30:00Z");
    let granted = GrantRequest::new(org.clone(), amount(9), "mistake".into(), None).expect("grant");
    let lot = ledger.grant(granted).await.expect("granted").lot.expect("lot");
    set("2026-03-29T01:30:00Z");
    ledger.void_lot(&lot, "oops").await.expect("voided");
    set("2026-12-01T00:00:00Z");

    let report = |from: &str, to: &str, interval, zone: &str, group_by| {
        let query = UsageQuery {
            organization_id: org.clone(),
            from: at(from),
            to: at(to),
            interval,
            time_zone: UsageQuery::time_zone(zone).expect("zone"),
            group_by,
        };
        let ledger = ledger.clone();
        async move { ledger.usage(&query).await.expect("report") }
    };
    // Berlin's days around the spring change: 24, 23 (29 March), 24 hours.
    let spring =
        report("2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z", UsageInterval::Day, "Europe/Berlin", None).await;
    let lengths = |buckets: &[credits::ledger::UsageBucket], to: &str| -> Vec<i64> {
        let mut edges: Vec<DateTime<Utc>> = buckets.iter().map(|bucket| bucket.start).collect();
        edges.push(at(to));
        edges.windows(2).map(|pair| (pair[1] - pair[0]).num_hours()).collect()
    };
    assert_eq!(lengths(&spring.buckets, "2026-03-30T22:00:00Z"), [24, 23, 24]);
    let autumn =
        report("2026-10-23T22:00:00Z", "2026-10-26T23:00:00Z", UsageInterval::Day, "Europe/Berlin", None).await;
    assert_eq!(lengths(&autumn.buckets, "2026-10-26T23:00:00Z"), [24, 25, 24]);

    // Any range, cut anywhere (slot edges or not), adds up to exactly the transactions in it.
    let history = all_transactions(&ledger, &org).await;
    let mut seed = 0x5eed_u64;
    let mut random = move |below: i64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as i64 % below
    };
    let intervals = [UsageInterval::Hour, UsageInterval::Day, UsageInterval::Week, UsageInterval::Month];
    let zones = ["UTC", "Europe/Berlin", "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe"];
    for case in 0..40 {
        let from = at("2026-03-26T00:00:00Z") + Duration::seconds(random(240 * 86_400));
        let interval = intervals[case % 4];
        let longest = match interval {
            UsageInterval::Hour => 700 * 3_600,
            _ => 230 * 86_400,
        };
        let to = from + Duration::seconds(1 + random(longest));
        let zone = zones[random(zones.len() as i64) as usize];
        let group_by = [None, Some(UsageGroupBy::ReferenceType), Some(UsageGroupBy::ApiKey)][case % 3];
        let query = UsageQuery {
            organization_id: org.clone(),
            from,
            to,
            interval,
            time_zone: UsageQuery::time_zone(zone).expect("zone"),
            group_by,
        };
        let report = ledger.usage(&query).await.expect("report");
        let mut expected = credits::ledger::UsageTotals::default();
        for (kind, credits, created_at) in &history {
            if *created_at >= from && *created_at < to {
                expected.count(*kind, *credits);
            }
        }
        assert_eq!(report.totals, expected, "case {case}: {from} to {to}, {interval:?} in {zone}");
        let mut summed = credits::ledger::UsageTotals::default();
        for bucket in &report.buckets {
            summed.add(&bucket.totals);
        }
        assert_eq!(summed, expected, "case {case}: buckets add up");
    }
}

/// Every transaction of `org`, as (kind, amount, createdAt).
async fn all_transactions(ledger: &Ledger, org: &str) -> Vec<(TransactionKind, i64, DateTime<Utc>)> {
    let mut all = Vec::new();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    loop {
        let page = ledger
            .transactions_in_order(org, (None, None), None, after.as_ref().map(|(at, id)| (*at, id.as_str())), 1_000)
            .await
            .expect("page");
        let Some(last) = page.last() else { return all };
        after = Some((last.created_at, last.id.clone()));
        all.extend(page.iter().map(|transaction| {
            let kind = TransactionKind::from_name(&transaction.kind).expect("a kind");
            (kind, transaction.amount, transaction.created_at)
        }));
    }
}

async fn bad_report_arguments_are_refused(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, key) = app.funded_org("Bad reports", 0).await;
    // On the hour, so that 31 days are 744 whole hours.
    let now = DateTime::from_timestamp(Utc::now().timestamp() / 3_600 * 3_600, 0).expect("hour");
    let day = |days: i64| (now + Duration::days(days)).to_rfc3339();
    for (variables, why) in [
        (json!({ "from": day(0), "to": day(1), "interval": "DAY", "zone": "Mars/Olympus" }), "unknown time zone"),
        (json!({ "from": day(1), "to": day(0), "interval": "DAY" }), "from after to"),
        (json!({ "from": day(0), "to": day(0), "interval": "DAY" }), "empty range"),
        (json!({ "from": day(0), "to": day(32), "interval": "HOUR" }), "more than 744 hours"),
        (json!({ "from": day(-800), "to": day(0), "interval": "DAY" }), "more than 744 days"),
    ] {
        let errors = app.fails(Some(&key), USAGE, variables, "BAD_USER_INPUT").await;
        assert!(errors.to_string().len() > 10, "{why}: {errors}");
    }
    app.fails(None, USAGE, json!({ "from": day(0), "to": day(1), "interval": "DAY" }), "UNAUTHENTICATED").await;
    app.fails(
        Some(ADMIN_TOKEN),
        USAGE,
        json!({ "org": "org_missing", "from": day(0), "to": day(1), "interval": "DAY" }),
        "NOT_FOUND",
    )
    .await;
    // The longest report there is answers.
    let data = app.ok(Some(&key), USAGE, json!({ "from": day(-31), "to": day(0), "interval": "HOUR" })).await;
    assert_eq!(data["creditUsage"]["buckets"].as_array().expect("buckets").len(), 744);
}

/// Writes `count` consumes (of 1 credit, every 7th with a description that needs CSV
/// quoting) straight through the ledger, a thousand per transaction.
async fn write_history(url: &str, org: &str, count: usize) {
    let db = credits::db::connect(url).await.expect("connect");
    let ledger = Ledger::new(db);
    let seed = GrantRequest::new(org.to_owned(), Amount::parse(count as i64).expect("amount"), "seed".into(), None);
    ledger.grant(seed.expect("grant")).await.expect("granted");
    for chunk in 0..count.div_ceil(1_000) {
        let mut tx = ledger.begin().await.expect("begin");
        for index in chunk * 1_000..((chunk + 1) * 1_000).min(count) {
            let description =
                if index % 7 == 0 { format!("line, \"quoted\"\nnext {index}") } else { format!("use {index}") };
            let request = ChangeRequest {
                organization_id: org.to_owned(),
                kind: TransactionKind::Consumption,
                delta: -1,
                description: Some(description),
                reference_type: Some(["a", "b"][index % 2].to_owned()),
                reference_id: None,
                idempotency_key: Some(format!("k{index}")),
                lot: None,
                by: Default::default(),
            };
            tx.change(&request).await.expect("consume");
        }
        tx.commit().await.expect("commit");
    }
}

fn resident_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

async fn an_export_is_the_ledger_row_for_row_in_constant_memory(engine: Engine) {
    let Some(database) = database(engine).await else {
        return;
    };
    let url = database.url.clone();
    let mut server = ServerProcess::start(&url, &[]).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let create = |name: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let response: Value = client
                .post(format!("{base}/graphql"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "query": "mutation($name: String!) { createOrganization(input: { name: $name }) { id } }", "variables": { "name": name } }))
                .send()
                .await
                .expect("create")
                .json()
                .await
                .expect("json");
            response["data"]["createOrganization"]["id"].as_str().expect("id").to_owned()
        }
    };
    let org = create("Export").await;
    let other = create("Neighbour").await;
    const ROWS: usize = 100_000;
    write_history(&url, &org, ROWS).await;
    write_history(&url, &other, 50).await;

    let export = |format: &'static str, organization: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/export/transactions?format={format}&organizationId={organization}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("export")
        }
    };
    // The ledger's own rows, in creation order.
    let db = credits::db::connect(&url).await.expect("connect");
    let ledger = Ledger::new(db);
    let mut expected = Vec::new();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    loop {
        let page = ledger
            .transactions_in_order(&org, (None, None), None, after.as_ref().map(|(at, id)| (*at, id.as_str())), 5_000)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        expected.extend(page);
    }
    assert_eq!(expected.len(), ROWS + 1);

    // CSV, parsed back by a CSV reader: the contract's header, then every row.
    let response = export("csv", org.clone()).await;
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let text = response.text().await.expect("csv");
    assert!(text.starts_with(
        "id,createdAt,kind,amount,balanceAfter,description,referenceType,referenceId,idempotencyKey,holdId,apiKeyId\r\n"
    ));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut rows = 0;
    for (record, want) in reader.records().zip(&expected) {
        let record = record.expect("a CSV record");
        assert_eq!(record.len(), 11);
        assert_eq!(&record[0], want.id.as_str());
        assert_eq!(&record[2], want.kind.as_str());
        assert_eq!(record[3].parse::<i64>().expect("amount"), want.amount);
        assert_eq!(record[4].parse::<i64>().expect("balance"), want.balance_after);
        assert_eq!(&record[5], want.description.as_deref().unwrap_or_default());
        assert_eq!(&record[8], want.idempotency_key.as_deref().unwrap_or_default());
        rows += 1;
    }
    assert_eq!(rows, ROWS + 1);

    // The CSV export first: it also warms the server's caches (the database's pages,
    // the allocator's arenas), so that the peak memory measured next is the stream's.
    let small = export("ndjson", other.clone()).await;
    assert_eq!(small.text().await.expect("body").lines().count(), 51);
    let before = resident_peak_kib(server.pid());

    // NDJSON, read as a stream, parsed back line by line.
    let response = export("ndjson", org.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert!(response.headers()["content-disposition"].to_str().expect("ascii").starts_with("attachment"));
    let mut response = response;
    let (mut pending, mut lines, mut bytes) = (Vec::new(), 0usize, 0usize);
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        bytes += chunk.len();
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let row: Value = serde_json::from_slice(&line).expect("a JSON line");
            let want = &expected[lines];
            assert_eq!(row["id"], want.id.as_str());
            assert_eq!(row["organizationId"], org.as_str());
            assert_eq!(row["kind"], want.kind.as_str());
            assert_eq!(row["amount"], want.amount);
            assert_eq!(row["balanceAfter"], want.balance_after);
            assert_eq!(row["description"].as_str(), want.description.as_deref());
            assert_eq!(row["referenceType"].as_str(), want.reference_type.as_deref());
            assert_eq!(row["idempotencyKey"].as_str(), want.idempotency_key.as_deref());
            assert_eq!(at(row["createdAt"].as_str().expect("createdAt")), want.created_at.with_nanosecond_floor());
            lines += 1;
        }
    }
    assert!(pending.is_empty());
    assert_eq!(lines, ROWS + 1);
    let grown = resident_peak_kib(server.pid()).saturating_sub(before);
    assert!(
        (grown as usize) * 1024 < bytes / 4,
        "the server's peak memory grew by {grown} KiB while streaming {bytes} bytes"
    );

    // A range and kinds: only the seed grant is a GRANT.
    let response = client
        .get(format!("{base}/export/transactions?format=ndjson&organizationId={org}&kinds=GRANT"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("export");
    let text = response.text().await.expect("body");
    assert_eq!(text.lines().count(), 1, "{text}");
    let from = expected[10].created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let to = expected[20].created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let response = client
        .get(format!("{base}/export/transactions"))
        .query(&[("format", "ndjson"), ("organizationId", org.as_str()), ("from", from.as_str()), ("to", to.as_str())])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("export");
    let in_range = expected
        .iter()
        .filter(|t| t.created_at >= expected[10].created_at && t.created_at < expected[20].created_at)
        .count();
    assert_eq!(response.text().await.expect("body").lines().count(), in_range);
    server.kill();
}

async fn exports_are_authorized_like_graphql(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Mine", 100).await;
    let (other_org, other_key) = app.funded_org("Theirs", 100).await;
    app.ok(
        Some(&other_key),
        "mutation { consumeCredits(input: { amount: 3, description: \"theirs\" }) { replayed } }",
        json!({}),
    )
    .await;
    let get = |query: String, token: Option<String>| {
        let client = app.client.clone();
        let base = app.base.clone();
        async move {
            let mut request = client.get(format!("{base}/export/transactions{query}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("export");
            (response.status().as_u16(), response.text().await.expect("body"))
        }
    };
    // The key's own history, and nothing of another organization's.
    let (status, body) = get("?format=ndjson".into(), Some(key.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().count(), 1);
    assert!(!body.contains(&other_org));
    let (status, body) = get(format!("?format=csv&organizationId={other_org}"), Some(key.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("FORBIDDEN"));
    // No token, a bad one, and a token in the URL (even beside a valid header).
    assert_eq!(get("?format=csv".into(), None).await.0, 401);
    assert_eq!(get("?format=csv".into(), Some("sk_live_nope".into())).await.0, 401);
    for name in ["token", "access_token", "key", "authorization", "Token"] {
        let (status, body) = get(format!("?format=csv&{name}={key}"), Some(key.clone())).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("BAD_USER_INPUT"), "{body}");
    }
    // Bad parameters are the client's mistake.
    for query in ["?format=xml", "?from=yesterday", "?kinds=GRANT,NOPE", "?color=blue"] {
        assert_eq!(get(query.into(), Some(key.clone())).await.0, 400, "{query}");
    }
    // The admin must name the organization; an unknown one is 404.
    assert_eq!(get("?format=csv".into(), Some(ADMIN_TOKEN.into())).await.0, 400);
    assert_eq!(get("?format=csv&organizationId=org_missing".into(), Some(ADMIN_TOKEN.into())).await.0, 404);
    let (status, body) = get(format!("?format=csv&organizationId={org}"), Some(ADMIN_TOKEN.into())).await;
    assert_eq!((status, body.lines().count()), (200, 2));
    // A client session needs READ.
    for (scopes, status) in [("[CONSUME]", 403), ("[READ]", 200)] {
        let session = app
            .ok(
                Some(&key),
                &format!("mutation {{ createClientSession(input: {{ scopes: {scopes} }}) {{ token }} }}"),
                json!({}),
            )
            .await["createClientSession"]["token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert_eq!(get("?format=csv".into(), Some(session)).await.0, status, "{scopes}");
    }
}

async fn history_written_before_reports_is_in_them_after_the_upgrade(engine: Engine) {
    use migration::MigratorTrait;
    let Some(database) = database(engine).await else {
        return;
    };
    let (ledger, clock) = ledger_with_clock(&database.url).await;
    let org = ledger.create_organization("Old", None).await.expect("organization").id;
    let amount = |credits| Amount::parse(credits).expect("amount");
    ledger
        .grant(GrantRequest::new(org.clone(), amount(500), "seed".into(), None).expect("grant"))
        .await
        .expect("granted");
    for index in 0..40i64 {
        clock.store(index * 1_000, Ordering::SeqCst);
        let reference = Some(["a", "b"][index as usize % 2].to_owned());
        let request = ConsumeRequest::new(org.clone(), amount(1 + index % 3), "use".into(), reference, None, None);
        ledger.consume(request.expect("consume")).await.expect("consumed");
    }
    // Back to the schema before reports (no rollup, no attribution), and up again: the
    // upgrade fills the rollup from the transactions already written. Counted from the
    // reports' step, however many steps came after it.
    let steps = migration::Migrator::migrations();
    let reports = steps.iter().position(|step| step.name().contains("usage_and_attribution")).expect("the step");
    migration::Migrator::down(ledger.db(), Some((steps.len() - reports) as u32)).await.expect("down");
    migration::Migrator::up(ledger.db(), None).await.expect("up");
    let query = UsageQuery {
        organization_id: org.clone(),
        from: at("2025-12-01T00:00:00Z"),
        to: at("2026-02-01T00:00:00Z"),
        interval: UsageInterval::Day,
        time_zone: UsageQuery::time_zone("UTC").expect("zone"),
        group_by: Some(UsageGroupBy::ReferenceType),
    };
    let report = ledger.usage(&query).await.expect("report");
    let mut expected = credits::ledger::UsageTotals::default();
    for (kind, credits, _) in all_transactions(&ledger, &org).await {
        expected.count(kind, credits);
    }
    assert_eq!(report.totals, expected);
    assert_eq!(report.totals.transactions, 41);
    let groups: std::collections::BTreeSet<Option<String>> =
        report.buckets.iter().map(|bucket| bucket.group.clone()).collect();
    assert_eq!(groups, [None, Some("a".to_owned()), Some("b".to_owned())].into_iter().collect());
}

/// The usage benchmark still runs (a small history, both engines): `cargo test` builds
/// the examples beside the server binary it drives.
#[test]
fn the_usage_benchmark_runs() {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_credits"));
    let example = binary.parent().expect("target dir").join("examples").join("bench_usage");
    if !example.exists() {
        assert!(!crate::helpers::in_ci(), "{} was not built", example.display());
        crate::helpers::skip_loudly("the bench_usage example is not built here; its smoke run was skipped");
        return;
    }
    let output = std::process::Command::new(&example).arg("2000").output().expect("run bench_usage");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("| SQLite | creditUsage DAY × 30"), "{stdout}");
    assert!(stdout.contains("| SQLite | export CSV, 2000 rows"), "{stdout}");
    if crate::helpers::in_ci() {
        assert!(stdout.contains("| PostgreSQL | export CSV"), "{stdout}");
    }
}
