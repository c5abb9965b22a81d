//! Many clients racing on one organization: the outcome must be exact.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{Engine, spawn_app};
use crate::on_both_engines;

on_both_engines!(concurrent_consumes_never_overdraw, concurrent_retries_under_one_key_charge_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_one_key_inside_batches_charge_it_once_and_everything_else_once() {
    let Some(app) = spawn_app(Engine::Postgres).await else {
        return;
    };
    let replica = app.spawn_replica().await;
    let (_, key) = app.funded_org("Batches", 10_000).await;
    // Two group committers on one database: the same key lands in a batch on each, so
    // one batch fails on the unique key as a whole and its members, keyed or not, are
    // committed again one by one.
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
