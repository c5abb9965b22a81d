//! Client mistakes get a 4xx or a coded GraphQL error, never a 5xx, a panic or a charge.

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Engine, spawn_app};
use crate::on_both_engines;

on_both_engines!(bad_amounts_and_strings_are_refused, malformed_and_abusive_requests_are_refused);

const CONSUME: &str = "mutation($amount: Credits!, $desc: String!, $ref: String, $key: String) { consumeCredits(input: { amount: $amount, description: $desc, referenceType: $ref, idempotencyKey: $key }) { replayed } }";

async fn bad_amounts_and_strings_are_refused(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Input", 100).await;
    for amount in
        [json!(0), json!(-5), json!(9_007_199_254_740_992_i64), json!(1.5), json!("10"), json!(null), json!(true)]
    {
        let (status, body) = app.post(Some(&key), CONSUME, json!({ "amount": amount, "desc": "x" })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "amount {amount}: {body}");
    }
    // Literal values in the document are checked the same way.
    app.fails(
        Some(&key),
        "mutation { consumeCredits(input: { amount: -1, description: \"x\" }) { replayed } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
    app.fails(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 99999999999999999999, description: \"x\" }) { replayed } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
    // Over-long strings.
    let huge = "x".repeat(5_000);
    app.fails(Some(&key), CONSUME, json!({ "amount": 1, "desc": huge }), "BAD_USER_INPUT").await;
    app.fails(Some(&key), CONSUME, json!({ "amount": 1, "desc": "x", "ref": "r".repeat(300) }), "BAD_USER_INPUT").await;
    app.fails(Some(&key), CONSUME, json!({ "amount": 1, "desc": "x", "key": "" }), "BAD_USER_INPUT").await;
    app.fails(
        Some(ADMIN_TOKEN),
        "mutation($n: String!) { createOrganization(input: { name: $n }) { id } }",
        json!({ "n": "  " }),
        "BAD_USER_INPUT",
    )
    .await;
    // A grant that would pass 2^53 − 1 is refused, not wrapped.
    app.fails(
        Some(ADMIN_TOKEN),
        "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 9007199254740991, description: \"x\" }) { replayed } }",
        json!({ "org": org }),
        "BAD_USER_INPUT",
    )
    .await;
    assert_eq!(app.balance(&key).await, 100);
    assert_eq!(app.transaction_sum(&key).await, (100, 1));
}

async fn malformed_and_abusive_requests_are_refused(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, key) = app.funded_org("Abuse", 100).await;
    let url = format!("{}/graphql", app.base);
    let raw = |body: String, content_type: Option<&'static str>| {
        let mut request = app.client.post(&url).bearer_auth(&key).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    // Malformed JSON, wrong shapes, missing or wrong content type.
    for (body, expected) in [
        ("{\"query\": ", 400),
        ("[]", 400),
        ("42", 400),
        ("{\"query\": 5}", 400),
        ("{\"query\": \"{ __typename }\", \"variables\": [1]}", 400),
        ("{\"qeury\": \"{ __typename }\"}", 400),
    ] {
        let response = raw(body.to_owned(), Some("application/json")).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{body}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    let response = raw("{\"query\": \"{ __typename }\"}".into(), None).await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let response = raw("{\"query\": \"{ __typename }\"}".into(), Some("text/plain")).await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
    // An oversized body is refused before it is read whole. The server then closes that
    // connection while the client may still be writing, so the request goes on a client
    // of its own: the shared pool must not hand the closed connection to the next test step.
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!("{{\"query\": \"{{ __typename }}\", \"x\": \"{}\"}}", "a".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    // Too deep: by the validator, and far too deep for the parser, refused before parsing.
    let deep = format!(
        "{{ creditBalance {{ organization {}{{ id }}{} }} }}",
        "{ balance { organization ".repeat(8),
        "} } ".repeat(8)
    );
    app.fails(Some(&key), &deep, json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    let bomb = format!("{}{}", "{a".repeat(15_000), "}".repeat(15_000));
    let (status, body) = app.post(Some(&key), &bomb, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    // Alias flooding counts against complexity.
    let flood = format!(
        "{{ {} }}",
        (0..600).map(|i| format!("a{i}: creditBalance {{ balance }}")).collect::<Vec<_>>().join(" ")
    );
    app.fails(Some(&key), &flood, json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    // Batches are bounded.
    let batch = json!((0..11).map(|_| json!({ "query": "{ __typename }" })).collect::<Vec<_>>());
    let response = raw(batch.to_string(), Some("application/json")).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let batch = json!([{ "query": "{ creditBalance { balance } }" }, { "query": "{ __typename }" }]);
    let response: serde_json::Value =
        raw(batch.to_string(), Some("application/json")).await.unwrap().json().await.unwrap();
    assert_eq!(response[0]["data"]["creditBalance"]["balance"], 100);
    assert_eq!(response[1]["data"]["__typename"], "Query");
    // Unknown routes and methods.
    let response = app.client.get(format!("{}/nope", app.base)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = app.client.put(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    // And the server is still fine.
    assert_eq!(app.balance(&key).await, 100);
}
