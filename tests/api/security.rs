//! Security, round 3: bounded work per document, budgets that hold, revocation without a
//! window (API.md v3, "Bounded work, budgets that hold"). Each test failed on the code
//! before the round.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Engine, TestApp, spawn_app};
use crate::on_both_engines;

on_both_engines!(abusive_fragment_documents_are_refused_at_once_and_health_stays_up,);

/// Two operations and fragments that each spread the next `spreads` times, `depth` deep.
fn doubling(depth: usize, spreads: usize) -> String {
    let fragments: String = (0..depth)
        .map(|level| format!(" fragment f{level} on Query {{{}}}", format!(" ...f{}", level + 1).repeat(spreads)))
        .collect();
    format!("query A {{ ...f0 }} query B {{ __typename }}{fragments} fragment f{depth} on Query {{ __typename }}")
}

/// One operation: `fan` doubling levels into a chain of `chain` spreads.
fn fan_into_chain(fan: usize, chain: usize) -> String {
    let fans: String =
        (0..fan).map(|level| format!(" fragment g{level} on Query{{...g{0} ...g{0}}}", level + 1)).collect();
    let links: String = (0..chain).map(|link| format!(" fragment c{link} on Query{{...c{}}}", link + 1)).collect();
    format!("{{...g0}}{fans} fragment g{fan} on Query{{...c0}}{links} fragment c{chain} on Query{{__typename}}")
}

async fn post_raw(app: &TestApp, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("content-type", "application/json")
        .json(body)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json().await.expect("JSON body"))
}

/// The review's documents: each took seconds of CPU (or never ended) before it was
/// refused, and a few at once starved `/healthz`. Now each is refused within well under
/// a second, four at a time, while the health probe keeps answering.
async fn abusive_fragment_documents_are_refused_at_once_and_health_stays_up(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let chain = fan_into_chain(15, 1_900);
    assert!(chain.len() > 55_000 && chain.len() < 64 * 1024, "{}", chain.len());
    let documents = [
        (json!({ "query": doubling(24, 2) }), "BAD_USER_INPUT"),
        (json!({ "query": doubling(24, 2), "operationName": "B" }), "GRAPHQL_VALIDATION_FAILED"),
        (json!({ "query": doubling(26, 2), "operationName": "A" }), "GRAPHQL_VALIDATION_FAILED"),
        (json!({ "query": doubling(30, 3), "operationName": "B" }), "GRAPHQL_VALIDATION_FAILED"),
        (json!({ "query": chain }), "GRAPHQL_VALIDATION_FAILED"),
    ];
    for (body, code) in &documents {
        let started = Instant::now();
        let attackers: Vec<_> = (0..4)
            .map(|_| {
                let (app, body) = (&app, body.clone());
                async move { post_raw(app, &body).await }
            })
            .collect();
        let health = async {
            let mut slowest = Duration::ZERO;
            for _ in 0..5 {
                let asked = Instant::now();
                let response = app.client.get(format!("{}/healthz", app.base)).send().await.expect("healthz");
                assert!(response.status().is_success());
                slowest = slowest.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            slowest
        };
        let (answers, slowest_health) = tokio::join!(futures::future::join_all(attackers), health);
        let took = started.elapsed();
        for (status, answer) in answers {
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["errors"][0]["extensions"]["code"], *code, "{answer}");
            assert!(answer.get("data").is_none(), "{answer}");
        }
        // Debug builds are slow; these took 4 s to forever each before the round.
        assert!(took < Duration::from_secs(1), "four documents took {took:?}");
        assert!(slowest_health < Duration::from_millis(500), "/healthz took {slowest_health:?}");
    }
    // A legitimate document with shared fragments is measured and runs as before.
    let fine = "query Mine { a: creditBalance { ...B } b: creditBalance { ...B } } query Other { __typename } fragment B on CreditBalance { balance available }";
    let (status, answer) = post_raw(&app, &json!({ "query": fine, "operationName": "Other" })).await;
    assert_eq!((status, &answer["data"]["__typename"]), (200, &json!("Query")), "{answer}");
}
