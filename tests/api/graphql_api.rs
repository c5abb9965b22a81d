//! The contract's happy paths, every error code reachable here, and tenant isolation.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, spawn_app};
use crate::on_both_engines;

on_both_engines!(
    consume_grant_balance_and_history_happy_path,
    transactions_filter_and_paginate_both_ways,
    idempotent_consume_replays_and_conflicts,
    a_grant_retry_that_differs_in_any_field_is_an_idempotency_conflict,
    error_codes_reachable_here,
    tenants_cannot_see_or_spend_each_others_credits,
    api_keys_are_revocable_and_recorded_as_used,
    node_resolves_every_type_for_its_owner,
    low_balance_threshold_sets_and_clears,
);

async fn consume_grant_balance_and_history_happy_path(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Acme", 1_000).await;

    let data = app
        .ok(
            Some(&key),
            r#"mutation { consumeCredits(input: { amount: 50, description: "AI Image Generation", referenceType: "ai_image", referenceId: "img_1" }) {
                transaction { id organizationId kind amount balanceAfter description referenceType referenceId idempotencyKey createdAt }
                balance { id organizationId balance lowBalanceThreshold isLow updatedAt }
                replayed } }"#,
            json!({}),
        )
        .await;
    let payload = &data["consumeCredits"];
    let transaction = &payload["transaction"];
    assert!(transaction["id"].as_str().unwrap().starts_with("ctx_"));
    assert_eq!(transaction["organizationId"], org.as_str());
    assert_eq!(transaction["kind"], "CONSUMPTION");
    assert_eq!(transaction["amount"], -50);
    assert_eq!(transaction["balanceAfter"], 950);
    assert_eq!(transaction["referenceType"], "ai_image");
    assert_eq!(transaction["idempotencyKey"], serde_json::Value::Null);
    let created = transaction["createdAt"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "RFC 3339 UTC with millis: {created}");
    assert_eq!(payload["balance"]["balance"], 950);
    assert!(payload["balance"]["id"].as_str().unwrap().starts_with("bal_"));
    assert_eq!(payload["balance"]["isLow"], false);
    assert_eq!(payload["replayed"], false);

    // The admin acts on any organization by naming it.
    let data = app
        .ok(Some(ADMIN_TOKEN), "query($org: ID!) { creditBalance(organizationId: $org) { balance } organization(id: $org) { name balance { balance } } }", json!({ "org": org }))
        .await;
    assert_eq!(data["creditBalance"]["balance"], 950);
    assert_eq!(data["organization"]["name"], "Acme");
    assert_eq!(data["organization"]["balance"]["balance"], 950);

    let data = app
        .ok(
            Some(&key),
            "{ creditTransactions { totalCount edges { node { kind amount balanceAfter organization { id } } } } }",
            json!({}),
        )
        .await;
    let connection = &data["creditTransactions"];
    assert_eq!(connection["totalCount"], 2);
    assert_eq!(connection["edges"][0]["node"]["kind"], "CONSUMPTION", "newest first");
    assert_eq!(connection["edges"][1]["node"]["kind"], "GRANT");
    assert_eq!(connection["edges"][1]["node"]["amount"], 1000);
    assert_eq!(connection["edges"][0]["node"]["organization"]["id"], org.as_str());

    // Packages are public and purchases start empty.
    let data = app
        .ok(None, "{ creditPackages { id name credits bonusCredits totalCredits priceAmount currency } }", json!({}))
        .await;
    assert_eq!(
        data["creditPackages"],
        json!([
            { "id": "credits_starter", "name": "Starter", "credits": 10000, "bonusCredits": 0, "totalCredits": 10000, "priceAmount": 999, "currency": "usd" },
            { "id": "credits_basic", "name": "Basic", "credits": 50000, "bonusCredits": 5000, "totalCredits": 55000, "priceAmount": 3999, "currency": "usd" }
        ])
    );
    let data = app
        .ok(Some(&key), "{ creditPurchases { totalCount edges { node { id } } pageInfo { hasNextPage } } }", json!({}))
        .await;
    assert_eq!(data["creditPurchases"]["totalCount"], 0);
    assert_eq!(app.transaction_sum(&key).await, (950, 2));
}

async fn transactions_filter_and_paginate_both_ways(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, key) = app.funded_org("Pager", 100).await;
    for i in 1..=5 {
        app.ok(
            Some(&key),
            "mutation($ref: String!) { consumeCredits(input: { amount: 1, description: \"use\", referenceType: \"job\", referenceId: $ref }) { replayed } }",
            json!({ "ref": format!("job_{i}") }),
        )
        .await;
    }
    let page = |first: i64, after: serde_json::Value| {
        let app = &app;
        let key = key.clone();
        async move {
            app.ok(
                Some(&key),
                "query($first: Int, $after: String) { creditTransactions(first: $first, after: $after) { totalCount edges { cursor node { amount referenceId } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
                json!({ "first": first, "after": after }),
            )
            .await["creditTransactions"]
                .clone()
        }
    };
    let first = page(2, serde_json::Value::Null).await;
    assert_eq!(first["totalCount"], 6);
    assert_eq!(first["edges"][0]["node"]["referenceId"], "job_5");
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);
    let second = page(2, first["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(second["edges"][0]["node"]["referenceId"], "job_3");
    let third = page(2, second["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(third["edges"][1]["node"]["amount"], 100, "the grant is oldest");
    assert_eq!(third["pageInfo"]["hasNextPage"], false);

    // Backward: the two just newer than the third page's start.
    let data = app
        .ok(
            Some(&key),
            "query($before: String) { creditTransactions(last: 2, before: $before) { edges { node { referenceId } } pageInfo { hasPreviousPage hasNextPage } } }",
            json!({ "before": third["pageInfo"]["startCursor"] }),
        )
        .await;
    let back = &data["creditTransactions"];
    assert_eq!(back["edges"][0]["node"]["referenceId"], "job_3");
    assert_eq!(back["edges"][1]["node"]["referenceId"], "job_2");
    assert_eq!(back["pageInfo"]["hasPreviousPage"], true);

    // Filters: kind, reference, time range.
    let data = app
        .ok(
            Some(&key),
            r#"{ grants: creditTransactions(filter: { kinds: [GRANT] }) { totalCount }
                 uses: creditTransactions(filter: { kinds: [CONSUMPTION, REFUND], referenceType: "job" }) { totalCount }
                 one: creditTransactions(filter: { referenceId: "job_4" }) { edges { node { referenceId } } }
                 future: creditTransactions(filter: { createdAfter: "2999-01-01T00:00:00Z" }) { totalCount }
                 past: creditTransactions(filter: { createdBefore: "2000-01-01T00:00:00+02:00" }) { totalCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["grants"]["totalCount"], 1);
    assert_eq!(data["uses"]["totalCount"], 5);
    assert_eq!(data["one"]["edges"][0]["node"]["referenceId"], "job_4");
    assert_eq!(data["future"]["totalCount"], 0);
    assert_eq!(data["past"]["totalCount"], 0);
}

async fn idempotent_consume_replays_and_conflicts(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Idem", 100).await;
    let consume = "mutation($amount: Credits!, $desc: String!, $key: String) { consumeCredits(input: { amount: $amount, description: $desc, idempotencyKey: $key }) { transaction { id idempotencyKey } balance { balance } replayed } }";
    let first = app.ok(Some(&key), consume, json!({ "amount": 30, "desc": "job", "key": "k-1" })).await;
    let again = app.ok(Some(&key), consume, json!({ "amount": 30, "desc": "job", "key": "k-1" })).await;
    assert_eq!(first["consumeCredits"]["replayed"], false);
    assert_eq!(again["consumeCredits"]["replayed"], true);
    assert_eq!(first["consumeCredits"]["transaction"]["id"], again["consumeCredits"]["transaction"]["id"]);
    assert_eq!(again["consumeCredits"]["balance"]["balance"], 70);
    app.fails(Some(&key), consume, json!({ "amount": 31, "desc": "job", "key": "k-1" }), "IDEMPOTENCY_CONFLICT").await;
    app.fails(Some(&key), consume, json!({ "amount": 30, "desc": "other", "key": "k-1" }), "IDEMPOTENCY_CONFLICT")
        .await;
    // A failed request is not remembered: its retry is decided afresh.
    app.fails(Some(&key), consume, json!({ "amount": 500, "desc": "big", "key": "k-2" }), "INSUFFICIENT_CREDITS").await;
    app.grant(&org, 1000).await;
    let retried = app.ok(Some(&key), consume, json!({ "amount": 500, "desc": "big", "key": "k-2" })).await;
    assert_eq!(retried["consumeCredits"]["replayed"], false);
    // Keys are scoped per organization.
    let (_, other) = app.funded_org("Other", 100).await;
    let elsewhere = app.ok(Some(&other), consume, json!({ "amount": 30, "desc": "job", "key": "k-1" })).await;
    assert_eq!(elsewhere["consumeCredits"]["replayed"], false);
    assert_eq!(app.balance(&key).await, 570);
    assert_eq!(app.balance(&other).await, 70);
}

async fn a_grant_retry_that_differs_in_any_field_is_an_idempotency_conflict(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Granted", 0).await;
    let grant = "mutation($org: ID!, $amount: Credits!, $desc: String!, $category: CreditCategory, $priority: Int, $expiresAt: DateTime) { grantCredits(input: { organizationId: $org, amount: $amount, description: $desc, idempotencyKey: \"g-1\", category: $category, priority: $priority, expiresAt: $expiresAt }) { transaction { id } lot { id category priority expiresAt } balance { balance } replayed } }";
    // Nanoseconds, more than either engine stores: the retry is still the same request.
    let original = json!({ "org": org, "amount": 40, "desc": "welcome", "category": "PAID", "priority": 7, "expiresAt": "2099-01-01T00:00:00.123456789Z" });
    let with = |field: &str, value: Value| {
        let mut variables = original.clone();
        variables[field] = value;
        variables
    };
    let first = app.ok(Some(ADMIN_TOKEN), grant, original.clone()).await["grantCredits"].clone();
    assert_eq!(first["replayed"], false);
    assert_eq!(first["lot"]["category"], "PAID");
    // Identical, and the same instant written with another offset: replays.
    for retry in [original.clone(), with("expiresAt", json!("2099-01-01T01:00:00.123456789+01:00"))] {
        let again = app.ok(Some(ADMIN_TOKEN), grant, retry).await["grantCredits"].clone();
        assert_eq!(again["replayed"], true, "{again}");
        assert_eq!(again["transaction"]["id"], first["transaction"]["id"]);
        assert_eq!(again["lot"]["id"], first["lot"]["id"]);
    }
    for (field, value) in [
        ("category", json!("PROMOTIONAL")),
        ("category", Value::Null),
        ("priority", json!(8)),
        ("priority", Value::Null),
        ("expiresAt", json!("2099-01-01T00:00:01.123456Z")),
        ("expiresAt", Value::Null),
        ("amount", json!(41)),
        ("desc", json!("welcome!")),
    ] {
        let error = app.fails(Some(ADMIN_TOKEN), grant, with(field, value.clone()), "IDEMPOTENCY_CONFLICT").await;
        assert!(error["message"].is_string(), "{field} = {value}: {error}");
    }
    // A consume may not reuse a grant's key either.
    let consume = "mutation { consumeCredits(input: { amount: 1, description: \"welcome\", idempotencyKey: \"g-1\" }) { replayed } }";
    app.fails(Some(&key), consume, json!({}), "IDEMPOTENCY_CONFLICT").await;
    assert_eq!(app.balance(&key).await, 40, "the grant counted once");
    assert_eq!(app.transaction_sum(&key).await, (40, 1));
}

async fn error_codes_reachable_here(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Errs", 10).await;
    // UNAUTHENTICATED: no token, an unknown token, a malformed header.
    app.fails(None, "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    app.fails(Some("crk_not-a-real-key"), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    app.fails(Some("something-else"), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    // FORBIDDEN: admin-only mutations with an API key.
    app.fails(Some(&key), "mutation { createOrganization(input: { name: \"x\" }) { id } }", json!({}), "FORBIDDEN")
        .await;
    app.fails(Some(&key), "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 5, description: \"x\" }) { replayed } }", json!({ "org": org }), "FORBIDDEN").await;
    app.fails(
        Some(&key),
        "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"x\" }) { secret } }",
        json!({ "org": org }),
        "FORBIDDEN",
    )
    .await;
    app.fails(Some(&key), "mutation { revokeApiKey(id: \"key_any\") { id } }", json!({}), "FORBIDDEN").await;
    // NOT_FOUND: the admin names an organization that does not exist.
    app.fails(Some(ADMIN_TOKEN), "{ creditBalance(organizationId: \"org_nope\") { balance } }", json!({}), "NOT_FOUND")
        .await;
    app.fails(Some(ADMIN_TOKEN), "mutation { revokeApiKey(id: \"key_nope\") { id } }", json!({}), "NOT_FOUND").await;
    app.fails(
        Some(ADMIN_TOKEN),
        "mutation { createApiKey(input: { organizationId: \"org_nope\", name: \"x\" }) { secret } }",
        json!({}),
        "NOT_FOUND",
    )
    .await;
    // BAD_USER_INPUT: admin without organizationId, page too large, bad cursor.
    app.fails(Some(ADMIN_TOKEN), "{ creditBalance { balance } }", json!({}), "BAD_USER_INPUT").await;
    app.fails(Some(&key), "{ creditTransactions(first: 101) { totalCount } }", json!({}), "BAD_USER_INPUT").await;
    app.fails(Some(&key), "{ creditTransactions(after: \"garbage\") { totalCount } }", json!({}), "BAD_USER_INPUT")
        .await;
    app.fails(Some(&key), "{ creditTransactions(first: 1, last: 1) { totalCount } }", json!({}), "BAD_USER_INPUT")
        .await;
    // INSUFFICIENT_CREDITS carries the balance and the amount required.
    let error = app
        .fails(
            Some(&key),
            "mutation { consumeCredits(input: { amount: 11, description: \"x\" }) { replayed } }",
            json!({}),
            "INSUFFICIENT_CREDITS",
        )
        .await;
    assert_eq!(error["extensions"]["balance"], 10);
    assert_eq!(error["extensions"]["required"], 11);
    // GRAPHQL_PARSE_FAILED and GRAPHQL_VALIDATION_FAILED.
    app.fails(Some(&key), "{ creditBalance { balance }", json!({}), "GRAPHQL_PARSE_FAILED").await;
    app.fails(Some(&key), "{ creditBalance { nope } }", json!({}), "GRAPHQL_VALIDATION_FAILED").await;
    // Nothing was charged by any of it.
    assert_eq!(app.balance(&key).await, 10);
}

async fn tenants_cannot_see_or_spend_each_others_credits(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org_a, key_a) = app.funded_org("A", 100).await;
    let (org_b, key_b) = app.funded_org("B", 100).await;
    let vars = json!({ "org": org_b });
    app.fails(
        Some(&key_a),
        "query($org: ID) { creditBalance(organizationId: $org) { balance } }",
        vars.clone(),
        "FORBIDDEN",
    )
    .await;
    app.fails(
        Some(&key_a),
        "query($org: ID) { creditTransactions(organizationId: $org) { totalCount } }",
        vars.clone(),
        "FORBIDDEN",
    )
    .await;
    app.fails(
        Some(&key_a),
        "query($org: ID) { creditPurchases(organizationId: $org) { totalCount } }",
        vars.clone(),
        "FORBIDDEN",
    )
    .await;
    app.fails(Some(&key_a), "query($org: ID) { organization(id: $org) { name } }", vars.clone(), "FORBIDDEN").await;
    app.fails(Some(&key_a), "mutation($org: ID) { consumeCredits(input: { organizationId: $org, amount: 1, description: \"steal\" }) { replayed } }", vars.clone(), "FORBIDDEN").await;
    app.fails(
        Some(&key_a),
        "mutation($org: ID) { setLowBalanceThreshold(organizationId: $org, threshold: 5) { id } }",
        vars.clone(),
        "FORBIDDEN",
    )
    .await;
    // Ids of B's objects resolve to null for A, and to the object for B.
    let data =
        app.ok(Some(&key_b), "{ creditBalance { id } creditTransactions { edges { node { id } } } }", json!({})).await;
    let balance_id = data["creditBalance"]["id"].clone();
    let transaction_id = data["creditTransactions"]["edges"][0]["node"]["id"].clone();
    for id in [json!(org_b), balance_id.clone(), transaction_id.clone()] {
        let seen_by_a = app.ok(Some(&key_a), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
        assert_eq!(seen_by_a["node"], serde_json::Value::Null, "A saw {id}");
        let seen_by_b = app.ok(Some(&key_b), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
        assert_eq!(seen_by_b["node"]["id"], id);
    }
    // API keys and purchases are nodes too, visible to their own organization only.
    let key_b_id = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"second\" }) { apiKey { id } } }",
            json!({ "org": org_b }),
        )
        .await["createApiKey"]["apiKey"]["id"]
        .clone();
    sea_orm::ConnectionTrait::execute_unprepared(
        &credits::db::connect(&app.database_url()).await.unwrap(),
        &format!("INSERT INTO credit_purchases (id, organization_id, package_id, status, credits, amount, currency, checkout_session_id, created_at, updated_at) VALUES ('pur_isolation', '{org_b}', 'credits_basic', 'PENDING', 55000, 3999, 'usd', 'cs_isolation', '2026-11-25T00:00:00Z', '2026-11-25T00:00:00Z')"),
    )
    .await
    .unwrap();
    for id in [key_b_id, json!("pur_isolation")] {
        let seen_by_a = app.ok(Some(&key_a), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
        assert_eq!(seen_by_a["node"], serde_json::Value::Null, "A saw {id}");
        let seen_by_b = app.ok(Some(&key_b), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
        assert_eq!(seen_by_b["node"]["id"], id);
    }
    // Passing one's own id explicitly is fine.
    let own = app
        .ok(
            Some(&key_a),
            "query($org: ID) { creditBalance(organizationId: $org) { balance } }",
            json!({ "org": org_a }),
        )
        .await;
    assert_eq!(own["creditBalance"]["balance"], 100);
    assert_eq!(app.balance(&key_b).await, 100);
}

async fn api_keys_are_revocable_and_recorded_as_used(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let org = app.create_org("Keys").await;
    let data = app
        .ok(Some(ADMIN_TOKEN), "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"ci\" }) { secret apiKey { id organizationId name prefix createdAt lastUsedAt revokedAt } } }", json!({ "org": org }))
        .await;
    let secret = data["createApiKey"]["secret"].as_str().unwrap().to_owned();
    let api_key = &data["createApiKey"]["apiKey"];
    assert!(secret.starts_with("crk_") && secret.len() > 40);
    assert!(secret.starts_with(api_key["prefix"].as_str().unwrap()));
    assert_eq!(api_key["lastUsedAt"], serde_json::Value::Null);
    let id = api_key["id"].as_str().unwrap().to_owned();
    assert_eq!(app.balance(&secret).await, 0);
    // Recorded in the background, so that the request did not wait for the write.
    let started = std::time::Instant::now();
    loop {
        let seen = app
            .ok(
                Some(ADMIN_TOKEN),
                "query($id: ID!) { node(id: $id) { ... on ApiKey { lastUsedAt } } }",
                json!({ "id": id }),
            )
            .await;
        if seen["node"]["lastUsedAt"] != serde_json::Value::Null {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "lastUsedAt never recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let revoked = app
        .ok(Some(ADMIN_TOKEN), "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }", json!({ "id": id }))
        .await;
    assert_ne!(revoked["revokeApiKey"]["revokedAt"], serde_json::Value::Null);
    app.fails(Some(&secret), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
}

async fn node_resolves_every_type_for_its_owner(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Nodes", 5).await;
    let data =
        app.ok(Some(&key), "{ creditBalance { id } creditTransactions { edges { node { id } } } }", json!({})).await;
    let query = "query($a: ID!, $b: ID!, $c: ID!, $d: ID!) { a: node(id: $a) { __typename id } b: node(id: $b) { __typename id } c: node(id: $c) { __typename id } d: node(id: $d) { __typename id } }";
    let vars = json!({ "a": org, "b": data["creditBalance"]["id"], "c": data["creditTransactions"]["edges"][0]["node"]["id"], "d": "zzz_unknown" });
    let nodes = app.ok(Some(ADMIN_TOKEN), query, vars).await;
    assert_eq!(nodes["a"]["__typename"], "Organization");
    assert_eq!(nodes["b"]["__typename"], "CreditBalance");
    assert_eq!(nodes["c"]["__typename"], "CreditTransaction");
    assert_eq!(nodes["d"], serde_json::Value::Null);
}

async fn low_balance_threshold_sets_and_clears(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, key) = app.funded_org("Low", 50).await;
    let set = app
        .ok(
            Some(&key),
            "mutation { setLowBalanceThreshold(threshold: 100) { balance lowBalanceThreshold isLow } }",
            json!({}),
        )
        .await;
    assert_eq!(set["setLowBalanceThreshold"], json!({ "balance": 50, "lowBalanceThreshold": 100, "isLow": true }));
    let org = app.ok(Some(&key), "{ organization { lowBalanceThreshold } }", json!({})).await;
    assert_eq!(org["organization"]["lowBalanceThreshold"], 100);
    let cleared = app
        .ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: null) { lowBalanceThreshold isLow } }", json!({}))
        .await;
    assert_eq!(cleared["setLowBalanceThreshold"], json!({ "lowBalanceThreshold": null, "isLow": false }));
    app.fails(Some(&key), "mutation { setLowBalanceThreshold(threshold: -1) { isLow } }", json!({}), "BAD_USER_INPUT")
        .await;
    let created = app
        .ok(Some(ADMIN_TOKEN), "mutation { createOrganization(input: { name: \"T\", lowBalanceThreshold: 7 }) { lowBalanceThreshold balance { isLow } } }", json!({}))
        .await;
    assert_eq!(created["createOrganization"], json!({ "lowBalanceThreshold": 7, "balance": { "isLow": true } }));
}
