//! Many clients racing on one organization: the outcome must be exact.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{Engine, spawn_app};
use crate::on_both_engines;

on_both_engines!(
    concurrent_consumes_never_overdraw,
    concurrent_retries_under_one_key_charge_once,
    a_hundred_concurrent_holds_admit_exactly_what_is_spendable,
    captures_releases_and_the_expiry_of_one_hold_resolve_it_exactly_once,
    consumes_racing_an_expiry_never_spend_expired_credits,
    reads_racing_the_sweeper_never_see_held_credits_and_holds_disagree,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_one_key_inside_batches_charge_it_once_and_everything_else_once() {
    let Some(app) = spawn_app(Engine::Postgres).await else {
        return;
    };
    let replica = app.spawn_replica().await;
    let (_, key) = app.funded_org("Batches", 10_000).await;
    // Two group committers on one database: the same key lands in a batch on each. The
    // batch that locks the organization second finds the key taken and answers its
    // caller with the original; its other members, keyed or not, commit with it.
    let post = |base: &str, idempotency: Option<String>| {
        let url = format!("{base}/graphql");
        let body = json!({ "query": CONSUME, "variables": { "amount": 1, "key": idempotency } });
        let request = app.client.post(url).bearer_auth(&key).json(&body).send();
        async move {
            let body: serde_json::Value = request.await.expect("request").json().await.expect("JSON");
            assert!(body.get("errors").is_none(), "{body}");
            body["data"]["consumeCredits"].clone()
        }
    };
    let mut calls = Vec::new();
    for round in 0..40 {
        let base = if round % 2 == 0 { app.base.as_str() } else { replica.as_str() };
        calls.push(post(base, Some("shared".to_owned())));
        calls.push(post(base, None));
        calls.push(post(base, Some(format!("own-{round}"))));
    }
    let answers = join_all(calls).await;
    let shared: std::collections::HashSet<_> =
        answers.iter().step_by(3).map(|answer| answer["transaction"]["id"].clone()).collect();
    assert_eq!(shared.len(), 1, "every caller of the shared key gets the one original");
    let distinct: std::collections::HashSet<_> =
        answers.iter().map(|answer| answer["transaction"]["id"].clone()).collect();
    assert_eq!(distinct.len(), 1 + 40 + 40, "the shared key once, every other consume once");
    assert_eq!(app.balance(&key).await, 10_000 - 81);
    assert_eq!(app.transaction_sum(&key).await, (10_000 - 81, 82));
    // The usage rollup, written beside each batch, agrees with the history.
    app.assert_usage_matches_history(&key, None).await;
}

const CONSUME: &str = "mutation($amount: Credits!, $key: String) { consumeCredits(input: { amount: $amount, description: \"race\", idempotencyKey: $key }) { transaction { id } balance { balance } replayed } }";

async fn concurrent_consumes_never_overdraw(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (initial, amount, racers) = (1_000i64, 7i64, 250usize);
    let (_, key) = app.funded_org("Race", initial).await;
    let results = join_all((0..racers).map(|_| app.post(Some(&key), CONSUME, json!({ "amount": amount })))).await;
    let mut successes = 0i64;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        match body.get("errors") {
            None => successes += 1,
            Some(errors) => assert_eq!(errors[0]["extensions"]["code"], "INSUFFICIENT_CREDITS", "{body}"),
        }
    }
    assert_eq!(successes, initial / amount, "successes = floor(balance / amount)");
    let final_balance = app.balance(&key).await;
    assert_eq!(final_balance, initial - successes * amount);
    let (sum, count) = app.transaction_sum(&key).await;
    assert_eq!(sum, final_balance, "balance = sum of transactions");
    assert_eq!(count as i64, successes + 1);
    // The usage rollup, written beside each batch, agrees with the history.
    app.assert_usage_matches_history(&key, None).await;
}

async fn concurrent_retries_under_one_key_charge_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (keys, retries, amount) = (20usize, 10usize, 3i64);
    let (_, api_key) = app.funded_org("Retry", 1_000).await;
    let requests = (0..keys).flat_map(|k| (0..retries).map(move |_| k));
    let results =
        join_all(requests.map(|k| {
            let app = &app;
            let api_key = api_key.clone();
            async move {
                (k, app.post(Some(&api_key), CONSUME, json!({ "amount": amount, "key": format!("key-{k}") })).await)
            }
        }))
        .await;
    for k in 0..keys {
        let mine: Vec<_> = results.iter().filter(|(key, _)| *key == k).map(|(_, (_, body))| body).collect();
        assert!(mine.iter().all(|body| body.get("errors").is_none()), "{mine:?}");
        let ids: std::collections::HashSet<_> =
            mine.iter().map(|b| b["data"]["consumeCredits"]["transaction"]["id"].clone()).collect();
        assert_eq!(ids.len(), 1, "every retry of key-{k} returns the one original");
        let originals = mine.iter().filter(|b| b["data"]["consumeCredits"]["replayed"] == false).count();
        assert_eq!(originals, 1, "exactly one non-replayed answer for key-{k}");
    }
    assert_eq!(app.balance(&api_key).await, 1_000 - keys as i64 * amount);
    let (sum, count) = app.transaction_sum(&api_key).await;
    assert_eq!((sum, count), (1_000 - keys as i64 * amount, keys + 1));
}

const HOLD: &str = "mutation($amount: Credits!, $ttl: Int) { createHold(input: { amount: $amount, description: \"race\", ttlSeconds: $ttl }) { hold { id } } }";
const CAPTURE: &str = "mutation($id: ID!) { captureHold(input: { id: $id }) { transaction { id amount } replayed } }";
const RELEASE: &str = "mutation($id: ID!) { releaseHold(id: $id) { status } }";

async fn grant(app: &crate::helpers::TestApp, org: &str, amount: i64, expires_at: Option<String>) -> serde_json::Value {
    let query = "mutation($org: ID!, $amount: Credits!, $expiresAt: DateTime, $category: CreditCategory) { grantCredits(input: { organizationId: $org, amount: $amount, description: \"race\", expiresAt: $expiresAt, category: $category }) { lot { id expiresAt } } }";
    let category = if expires_at.is_some() { "PROMOTIONAL" } else { "PAID" };
    let variables = json!({ "org": org, "amount": amount, "expiresAt": expires_at, "category": category });
    app.ok(Some(crate::helpers::ADMIN_TOKEN), query, variables).await["grantCredits"]["lot"].clone()
}

async fn a_hundred_concurrent_holds_admit_exactly_what_is_spendable(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Holds race").await;
    let key = app.create_key(&org).await;
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    grant(&app, &org, 600, Some(in_an_hour)).await;
    grant(&app, &org, 400, None).await;
    let results = join_all((0..100).map(|_| app.post(Some(&key), HOLD, json!({ "amount": 15 })))).await;
    let mut admitted = 0i64;
    for (status, body) in &results {
        match body.get("errors") {
            None => admitted += 1,
            Some(errors) => {
                assert_eq!(*status, 200, "{body}");
                assert_eq!(errors[0]["extensions"]["code"], "INSUFFICIENT_CREDITS", "{body}");
            }
        }
    }
    assert_eq!(admitted, 1_000 / 15, "exactly what is spendable is held");
    let data = app
        .ok(Some(&key), "{ creditBalance { balance held available } creditLots { edges { node { remaining held } } } creditHolds(filter: { statuses: [ACTIVE] }) { totalCount } }", json!({}))
        .await;
    assert_eq!(
        data["creditBalance"],
        json!({ "balance": 1_000, "held": admitted * 15, "available": 1_000 - admitted * 15 })
    );
    let lots_held: i64 =
        data["creditLots"]["edges"].as_array().unwrap().iter().map(|edge| edge["node"]["held"].as_i64().unwrap()).sum();
    assert_eq!(lots_held, admitted * 15, "the lots hold what the holds reserve");
    assert_eq!(data["creditHolds"]["totalCount"], admitted);
    assert_eq!(app.transaction_sum(&key).await, (1_000, 2), "holding writes no transaction");
}

/// Around the instant a hold expires, captures and releases of it race each other and
/// the TTL: whichever comes first wins, and every other answer agrees with it.
async fn captures_releases_and_the_expiry_of_one_hold_resolve_it_exactly_once(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Resolve race", 1_000).await;
    let mut captured_rounds = 0i64;
    for round in 0..6u64 {
        let data = app.ok(Some(&key), HOLD, json!({ "amount": 10, "ttl": 1 })).await;
        let id = data["createHold"]["hold"]["id"].clone();
        // Stagger the rounds across the expiry instant.
        tokio::time::sleep(std::time::Duration::from_millis(850 + round * 40)).await;
        let calls = (0..12).map(|i| {
            let query = if i % 2 == 0 { CAPTURE } else { RELEASE };
            app.post(Some(&key), query, json!({ "id": id }))
        });
        let answers = join_all(calls).await;
        let (captures, releases): (Vec<_>, Vec<_>) = answers.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let captured: Vec<&serde_json::Value> =
            captures.iter().filter(|(_, (_, body))| body.get("errors").is_none()).map(|(_, (_, body))| body).collect();
        if captured.is_empty() {
            // Released or expired first: every capture says how it ended, every release agrees.
            let statuses: std::collections::HashSet<String> = captures
                .iter()
                .map(|(_, (_, body))| {
                    assert_eq!(body["errors"][0]["extensions"]["code"], "HOLD_NOT_ACTIVE", "{body}");
                    body["errors"][0]["extensions"]["status"].as_str().unwrap().to_owned()
                })
                .chain(releases.iter().map(|(_, (_, body))| {
                    assert!(body.get("errors").is_none(), "{body}");
                    body["data"]["releaseHold"]["status"].as_str().unwrap().to_owned()
                }))
                .collect();
            assert_eq!(statuses.len(), 1, "one resolution: {statuses:?}");
        } else {
            captured_rounds += 1;
            assert_eq!(captured.len(), captures.len(), "a captured hold replays to every capture");
            let ids: std::collections::HashSet<_> =
                captured.iter().map(|body| body["data"]["captureHold"]["transaction"]["id"].clone()).collect();
            assert_eq!(ids.len(), 1, "one capture transaction");
            let originals = captured.iter().filter(|body| body["data"]["captureHold"]["replayed"] == false).count();
            assert_eq!(originals, 1);
            for (_, (_, body)) in &releases {
                assert_eq!(body["errors"][0]["extensions"]["code"], "HOLD_NOT_ACTIVE", "{body}");
                assert_eq!(body["errors"][0]["extensions"]["status"], "CAPTURED");
            }
        }
    }
    let (sum, count) = app.transaction_sum(&key).await;
    assert_eq!(count as i64, 1 + captured_rounds, "one consumption per captured hold, nothing else");
    assert_eq!(sum, 1_000 - 10 * captured_rounds);
    let data = app.ok(Some(&key), "{ creditBalance { balance held available } }", json!({})).await;
    assert_eq!(data["creditBalance"]["held"], 0);
    assert_eq!(data["creditBalance"]["available"], sum);
}

/// Consumes keep arriving across the instant a lot expires: none after the instant draws
/// on it, and what it lost to consumption and to expiry is exactly what it held.
async fn consumes_racing_an_expiry_never_spend_expired_credits(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Expiry race").await;
    let key = app.create_key(&org).await;
    let expiring =
        grant(&app, &org, 400, Some((chrono::Utc::now() + chrono::Duration::milliseconds(1_500)).to_rfc3339())).await;
    grant(&app, &org, 10_000, None).await;
    let expires_at = chrono::DateTime::parse_from_rfc3339(expiring["expiresAt"].as_str().unwrap()).unwrap();
    let stop = std::time::Instant::now() + std::time::Duration::from_millis(2_200);
    let workers = (0..8).map(|_| async {
        let mut answered = 0;
        while std::time::Instant::now() < stop {
            let (status, body) = app.post(Some(&key), CONSUME, json!({ "amount": 1 })).await;
            assert_eq!(status, 200, "{body}");
            answered += 1;
        }
        answered
    });
    let consumed: i64 = join_all(workers).await.into_iter().sum();
    let lot_id = expiring["id"].clone();
    let (mut after, mut from_lot, mut expired) = (serde_json::Value::Null, 0i64, 0i64);
    // 50 a page: an allocation's `lot` costs a page of lots (API.md v3), so 100 would not fit.
    loop {
        let page = app
            .ok(
                Some(&key),
                "query($after: String) { creditTransactions(first: 50, after: $after) { edges { node { kind amount createdAt allocations { lot { id } amount } } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await["creditTransactions"]
            .clone();
        for edge in page["edges"].as_array().unwrap() {
            let node = &edge["node"];
            let at = chrono::DateTime::parse_from_rfc3339(node["createdAt"].as_str().unwrap()).unwrap();
            for allocation in node["allocations"].as_array().unwrap() {
                if allocation["lot"]["id"] != lot_id {
                    continue;
                }
                match node["kind"].as_str().unwrap() {
                    "CONSUMPTION" => {
                        assert!(at < expires_at, "drawn at {at} from a lot expired at {expires_at}");
                        from_lot -= allocation["amount"].as_i64().unwrap();
                    }
                    "EXPIRY" => {
                        assert_eq!(at, expires_at, "the expiry is dated at the instant");
                        expired -= allocation["amount"].as_i64().unwrap();
                    }
                    _ => {}
                }
            }
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert!(from_lot > 0, "some consumes ran before the instant");
    assert_eq!(from_lot + expired, 400, "consumed plus expired is the lot, exactly");
    let (sum, count) = app.transaction_sum(&key).await;
    assert_eq!(sum, 10_400 - consumed - expired);
    assert_eq!(count as i64, 2 + consumed + i64::from(expired > 0));
    // The usage rollup, written beside each batch, agrees with the history.
    app.assert_usage_matches_history(&key, None).await;
}

/// Reads without the lock race a sweeper writing expired holds (another replica's, say):
/// every read must count exactly the holds still active, never the stored `held` of one
/// moment with the holds of the next.
async fn reads_racing_the_sweeper_never_see_held_credits_and_holds_disagree(engine: Engine) {
    use credits::ledger::{Amount, HoldRequest, Ledger};
    let Some(database) = crate::helpers::database(engine).await else { return };
    let db = credits::db::connect(&database.url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    let ledger = Ledger::new(db);
    let org = ledger.create_organization("Sweep race", None).await.expect("organization").id;
    let grant = credits::ledger::GrantRequest::new(org.clone(), Amount::parse(1_000_000).unwrap(), "g".into(), None);
    ledger.grant(grant.unwrap()).await.expect("grant");
    let hold = |ttl: i64| {
        HoldRequest::new(org.clone(), Amount::parse(10).unwrap(), "job".into(), None, None, None, Some(ttl)).unwrap()
    };
    ledger.create_hold(hold(3_600)).await.expect("the hold that stays");
    for round in 0..4 {
        for _ in 0..20 {
            ledger.create_hold(hold(1)).await.expect("a short hold");
        }
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let reads = async {
            for _ in 0..60 {
                let balance = ledger.balance(&org).await.expect("balance");
                assert_eq!(balance.held, 10, "round {round}: held counts only the hold still active");
                assert_eq!(balance.available, 1_000_000 - 10);
            }
        };
        let (swept, ()) = tokio::join!(ledger.sweep(), reads);
        swept.expect("sweep");
    }
}
