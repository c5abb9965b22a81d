//! Holds over HTTP: create, capture less or more, release, replay, `HOLD_NOT_ACTIVE`,
//! TTL, holds over a lot that expires, the overdraft, idempotency shared with consumes,
//! who may touch a hold, and the live events a hold causes.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, spawn_app};
use crate::on_both_engines;

on_both_engines!(
    a_hold_reserves_and_a_capture_of_less_consumes_once_and_releases_the_rest,
    a_capture_of_more_draws_the_excess_or_fails_leaving_the_hold_active,
    each_hold_resolves_once_and_ended_holds_answer_hold_not_active,
    holds_share_the_idempotency_namespace_of_consumes,
    a_hold_past_its_ttl_is_expired_at_once_and_written_by_the_sweeper,
    credits_held_in_a_lot_that_expires_stay_capturable_and_expire_when_released,
    holds_draw_on_the_overdraft_and_are_listed_filtered_and_resolved_by_node,
    only_the_holds_organization_may_touch_it_and_sessions_need_consume,
    a_hold_changes_held_and_available_live_and_can_make_the_balance_low,
);

const HOLD_FIELDS: &str = "id organizationId amount captured status description referenceType referenceId expiresAt createdAt updatedAt allocations { lot { id held remaining } amount }";

fn create_hold_query() -> String {
    format!(
        "mutation($org: ID, $amount: Credits!, $key: String, $ttl: Int, $description: String! = \"LLM call\") {{
            createHold(input: {{ organizationId: $org, amount: $amount, description: $description, referenceType: \"llm_call\", referenceId: \"run_1\", idempotencyKey: $key, ttlSeconds: $ttl }}) {{
                hold {{ {HOLD_FIELDS} }} balance {{ balance available held spendable }} replayed }} }}"
    )
}

fn capture_query() -> String {
    format!(
        "mutation($id: ID!, $amount: Credits, $description: String) {{
            captureHold(input: {{ id: $id, amount: $amount, description: $description }}) {{
                hold {{ {HOLD_FIELDS} }} transaction {{ id kind amount holdId description referenceType referenceId allocations {{ lot {{ id }} amount }} }}
                balance {{ balance available held }} replayed }} }}"
    )
}

fn release_query() -> String {
    format!("mutation($id: ID!) {{ releaseHold(id: $id) {{ {HOLD_FIELDS} }} }}")
}

async fn hold(app: &TestApp, token: &str, amount: i64, variables: Value) -> Value {
    let mut all = json!({ "amount": amount });
    all.as_object_mut().unwrap().extend(variables.as_object().unwrap().clone());
    app.ok(Some(token), &create_hold_query(), all).await["createHold"].clone()
}

async fn capture(app: &TestApp, token: &str, id: &Value, amount: Option<i64>) -> Value {
    app.ok(Some(token), &capture_query(), json!({ "id": id, "amount": amount })).await["captureHold"].clone()
}

async fn release(app: &TestApp, token: &str, id: &Value) -> Value {
    app.ok(Some(token), &release_query(), json!({ "id": id })).await["releaseHold"].clone()
}

async fn balance(app: &TestApp, key: &str) -> Value {
    app.ok(Some(key), "{ creditBalance { balance available held spendable } }", json!({})).await["creditBalance"]
        .clone()
}

async fn grant_lot(app: &TestApp, org: &str, amount: i64, extra: Value) -> Value {
    let query = r#"mutation($org: ID!, $amount: Credits!, $category: CreditCategory, $expiresAt: DateTime) {
        grantCredits(input: { organizationId: $org, amount: $amount, description: "lot", category: $category, expiresAt: $expiresAt }) {
            lot { id expiresAt } } }"#;
    let mut variables = json!({ "org": org, "amount": amount });
    variables.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    app.ok(Some(ADMIN_TOKEN), query, variables).await["grantCredits"]["lot"].clone()
}

fn in_seconds(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn a_hold_reserves_and_a_capture_of_less_consumes_once_and_releases_the_rest(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Holds").await;
    let key = app.create_key(&org).await;
    let lot = grant_lot(&app, &org, 100, json!({})).await;
    let created = hold(&app, &key, 30, json!({})).await;
    let held = &created["hold"];
    assert!(held["id"].as_str().unwrap().starts_with("hld_"), "{held}");
    assert_eq!(held["status"], "ACTIVE");
    assert_eq!(held["amount"], 30);
    assert_eq!(held["captured"], Value::Null);
    assert_eq!(held["organizationId"], org);
    assert_eq!(held["referenceType"], "llm_call");
    assert_eq!(
        held["allocations"],
        json!([{ "lot": { "id": lot["id"], "held": 30, "remaining": 100 }, "amount": 30 }])
    );
    let ttl = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(held["createdAt"].as_str().unwrap()).unwrap();
    assert_eq!(ttl.num_seconds(), 900, "default TTL");
    assert_eq!(created["balance"], json!({ "balance": 100, "available": 70, "held": 30, "spendable": 70 }));
    assert_eq!(created["replayed"], false);

    let captured = capture(&app, &key, &held["id"], Some(20)).await;
    assert_eq!(captured["replayed"], false);
    assert_eq!(captured["hold"]["status"], "CAPTURED");
    assert_eq!(captured["hold"]["captured"], 20);
    let transaction = &captured["transaction"];
    assert_eq!(transaction["kind"], "CONSUMPTION");
    assert_eq!(transaction["amount"], -20);
    assert_eq!(transaction["holdId"], held["id"]);
    assert_eq!(transaction["description"], "LLM call", "the hold's description by default");
    assert_eq!(transaction["referenceId"], "run_1");
    assert_eq!(transaction["allocations"], json!([{ "lot": { "id": lot["id"] }, "amount": -20 }]));
    assert_eq!(captured["balance"], json!({ "balance": 80, "available": 80, "held": 0 }));
    // The rest went back to the lot.
    let data = app.ok(Some(&key), "{ creditLots { edges { node { remaining held } } } }", json!({})).await;
    assert_eq!(data["creditLots"]["edges"][0]["node"], json!({ "remaining": 80, "held": 0 }));
    assert_eq!(app.transaction_sum(&key).await, (80, 2));

    // Bad TTLs and amounts are the client's mistake.
    for ttl in [0, 86_401, -5] {
        app.fails(Some(&key), &create_hold_query(), json!({ "amount": 1, "ttl": ttl }), "BAD_USER_INPUT").await;
    }
    app.fails(Some(&key), &create_hold_query(), json!({ "amount": 0 }), "BAD_USER_INPUT").await;
    let error = app.fails(Some(&key), &create_hold_query(), json!({ "amount": 81 }), "INSUFFICIENT_CREDITS").await;
    assert_eq!(error["extensions"]["balance"], 80);
    assert_eq!(error["extensions"]["available"], 80);
    assert_eq!(error["extensions"]["required"], 81);
    let max = hold(&app, &key, 80, json!({ "ttl": 86_400 })).await;
    assert_eq!(max["balance"]["available"], 0);
}

async fn a_capture_of_more_draws_the_excess_or_fails_leaving_the_hold_active(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("More").await;
    let key = app.create_key(&org).await;
    let first = grant_lot(&app, &org, 10, json!({ "expiresAt": in_seconds(3600) })).await;
    let second = grant_lot(&app, &org, 50, json!({})).await;
    let created = hold(&app, &key, 8, json!({})).await;
    assert_eq!(created["hold"]["allocations"][0]["lot"]["id"], first["id"]);
    let other = hold(&app, &key, 5, json!({})).await;
    assert_eq!(
        other["hold"]["allocations"],
        json!([
            { "lot": { "id": first["id"], "held": 10, "remaining": 10 }, "amount": 2 },
            { "lot": { "id": second["id"], "held": 3, "remaining": 50 }, "amount": 3 }
        ])
    );
    // 60 − 13 held = 47 available; capturing 8 + 48 needs 48 beyond the hold: refused.
    let error = app
        .fails(
            Some(&key),
            &capture_query(),
            json!({ "id": created["hold"]["id"], "amount": 56 }),
            "INSUFFICIENT_CREDITS",
        )
        .await;
    assert_eq!(error["extensions"]["required"], 48, "the part beyond the hold");
    assert_eq!(error["extensions"]["available"], 47);
    let still = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { ... on CreditHold { status } } }",
            json!({ "id": created["hold"]["id"] }),
        )
        .await;
    assert_eq!(still["node"]["status"], "ACTIVE", "the hold stays active");

    let captured = capture(&app, &key, &created["hold"]["id"], Some(20)).await;
    assert_eq!(captured["transaction"]["amount"], -20);
    assert_eq!(
        captured["transaction"]["allocations"],
        json!([{ "lot": { "id": first["id"] }, "amount": -8 }, { "lot": { "id": second["id"] }, "amount": -12 }]),
        "the hold's own credits first, the excess in draw order, one allocation per lot"
    );
    assert_eq!(captured["balance"], json!({ "balance": 40, "available": 35, "held": 5 }));
    // The whole hold by default.
    let whole = capture(&app, &key, &other["hold"]["id"], None).await;
    assert_eq!(whole["transaction"]["amount"], -5);
    assert_eq!(whole["hold"]["captured"], 5);
    assert_eq!(app.transaction_sum(&key).await, (35, 4));
}

async fn each_hold_resolves_once_and_ended_holds_answer_hold_not_active(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Once", 100).await;
    let captured_hold = hold(&app, &key, 30, json!({})).await["hold"]["id"].clone();
    let first = capture(&app, &key, &captured_hold, Some(20)).await;
    let again = capture(&app, &key, &captured_hold, Some(20)).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["transaction"]["id"], first["transaction"]["id"]);
    let described = app
        .ok(Some(&key), &capture_query(), json!({ "id": captured_hold, "amount": 20, "description": "other words" }))
        .await;
    assert_eq!(described["captureHold"]["replayed"], true, "descriptions are not compared");
    for amount in [None, Some(25)] {
        let error = app
            .fails(Some(&key), &capture_query(), json!({ "id": captured_hold, "amount": amount }), "HOLD_NOT_ACTIVE")
            .await;
        assert_eq!(error["extensions"]["status"], "CAPTURED");
    }
    let error = app.fails(Some(&key), &release_query(), json!({ "id": captured_hold }), "HOLD_NOT_ACTIVE").await;
    assert_eq!(error["extensions"]["status"], "CAPTURED");

    let released_hold = hold(&app, &key, 30, json!({})).await["hold"]["id"].clone();
    let released = release(&app, &key, &released_hold).await;
    assert_eq!(released["status"], "RELEASED");
    assert_eq!(released["captured"], Value::Null);
    assert_eq!(balance(&app, &key).await, json!({ "balance": 80, "available": 80, "held": 0, "spendable": 80 }));
    let again = release(&app, &key, &released_hold).await;
    assert_eq!(again, released, "releasing a released hold returns it unchanged");
    let error = app.fails(Some(&key), &capture_query(), json!({ "id": released_hold }), "HOLD_NOT_ACTIVE").await;
    assert_eq!(error["extensions"]["status"], "RELEASED");
    app.fails(Some(&key), &capture_query(), json!({ "id": "hld_nothing" }), "NOT_FOUND").await;
    app.fails(Some(&key), &release_query(), json!({ "id": "hld_nothing" }), "NOT_FOUND").await;
    // One capture, one consumption: nothing else was written.
    assert_eq!(app.transaction_sum(&key).await, (80, 2));
}

async fn holds_share_the_idempotency_namespace_of_consumes(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Keys", 100).await;
    let first = hold(&app, &key, 10, json!({ "key": "job-1" })).await;
    let again = hold(&app, &key, 10, json!({ "key": "job-1" })).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["hold"]["id"], first["hold"]["id"]);
    assert_eq!(again["balance"]["held"], 10, "held once");
    app.fails(Some(&key), &create_hold_query(), json!({ "amount": 11, "key": "job-1" }), "IDEMPOTENCY_CONFLICT").await;
    app.fails(
        Some(&key),
        &create_hold_query(),
        json!({ "amount": 10, "key": "job-1", "ttl": 60 }),
        "IDEMPOTENCY_CONFLICT",
    )
    .await;
    let consume = "mutation($key: String) { consumeCredits(input: { amount: 10, description: \"LLM call\", idempotencyKey: $key }) { replayed } }";
    app.fails(Some(&key), consume, json!({ "key": "job-1" }), "IDEMPOTENCY_CONFLICT").await;
    app.ok(Some(&key), consume, json!({ "key": "use-1" })).await;
    app.fails(Some(&key), &create_hold_query(), json!({ "amount": 10, "key": "use-1" }), "IDEMPOTENCY_CONFLICT").await;
    // A replay of a hold that has since been captured still returns it, as it is now.
    capture(&app, &key, &first["hold"]["id"], None).await;
    let later = hold(&app, &key, 10, json!({ "key": "job-1" })).await;
    assert_eq!(later["replayed"], true);
    assert_eq!(later["hold"]["status"], "CAPTURED");
    assert_eq!(app.transaction_sum(&key).await, (80, 3));
}

async fn a_hold_past_its_ttl_is_expired_at_once_and_written_by_the_sweeper(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Ttl", 50).await;
    let created = hold(&app, &key, 40, json!({ "ttl": 1 })).await;
    let id = created["hold"]["id"].clone();
    assert_eq!(created["balance"]["available"], 10);
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    // Past its TTL: expired and available again, whether or not a sweep ran yet.
    assert_eq!(balance(&app, &key).await, json!({ "balance": 50, "available": 50, "held": 0, "spendable": 50 }));
    let node = "query($id: ID!) { node(id: $id) { ... on CreditHold { status updatedAt expiresAt } } }".to_string();
    let data = app.ok(Some(&key), &node, json!({ "id": id })).await;
    assert_eq!(data["node"]["status"], "EXPIRED");
    assert_eq!(data["node"]["updatedAt"], data["node"]["expiresAt"]);
    let error = app.fails(Some(&key), &capture_query(), json!({ "id": id }), "HOLD_NOT_ACTIVE").await;
    assert_eq!(error["extensions"]["status"], "EXPIRED");
    assert_eq!(release(&app, &key, &id).await["status"], "EXPIRED", "released unchanged");
    // The whole balance is spendable again, and the hold never comes back.
    app.ok(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 50, description: \"x\" }) { replayed } }",
        json!({}),
    )
    .await;
    let listed = app
        .ok(
            Some(&key),
            "{ creditHolds(filter: { statuses: [EXPIRED] }) { totalCount edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["creditHolds"]["totalCount"], 1);
    assert_eq!(listed["creditHolds"]["edges"][0]["node"], json!({ "id": id, "status": "EXPIRED" }));
    let active = app.ok(Some(&key), "{ creditHolds(filter: { statuses: [ACTIVE] }) { totalCount } }", json!({})).await;
    assert_eq!(active["creditHolds"]["totalCount"], 0);
    // The sweeper writes it within seconds: the stored row says EXPIRED.
    let database = app.database_url();
    let db = credits::db::connect(&database).await.expect("connect");
    let started = std::time::Instant::now();
    loop {
        use sea_orm::EntityTrait;
        let row =
            entity::credit_hold::Entity::find_by_id(id.as_str().unwrap().to_owned()).one(&db).await.unwrap().unwrap();
        if row.status == "EXPIRED" {
            assert_eq!(row.updated_at.to_rfc3339(), row.expires_at.to_rfc3339());
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(6), "the sweeper never wrote the expiry");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(app.transaction_sum(&key).await, (0, 2));
}

async fn credits_held_in_a_lot_that_expires_stay_capturable_and_expire_when_released(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Expiring").await;
    let key = app.create_key(&org).await;
    let expiring = grant_lot(&app, &org, 10, json!({ "expiresAt": in_seconds(2) })).await;
    grant_lot(&app, &org, 5, json!({ "category": "PAID" })).await;
    let captured = hold(&app, &key, 5, json!({})).await["hold"]["id"].clone();
    let released = hold(&app, &key, 3, json!({})).await["hold"]["id"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    // The unheld 2 expired; 8 stay held in the expired lot.
    assert_eq!(balance(&app, &key).await, json!({ "balance": 15, "available": 5, "held": 8, "spendable": 5 }));
    let done = capture(&app, &key, &captured, None).await;
    assert_eq!(done["transaction"]["allocations"], json!([{ "lot": { "id": expiring["id"] }, "amount": -5 }]));
    let gone = release(&app, &key, &released).await;
    assert_eq!(gone["status"], "RELEASED");
    let data = app
        .ok(
            Some(&key),
            "{ creditTransactions(first: 10) { edges { node { kind amount createdAt allocations { lot { id status remaining held } amount } } } } creditBalance { balance available held } }",
            json!({}),
        )
        .await;
    let kinds: Vec<(String, i64)> = data["creditTransactions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| (edge["node"]["kind"].as_str().unwrap().to_owned(), edge["node"]["amount"].as_i64().unwrap()))
        .collect();
    let expected: Vec<(String, i64)> =
        [("EXPIRY", -3), ("CONSUMPTION", -5), ("EXPIRY", -2), ("GRANT", 5), ("GRANT", 10)]
            .iter()
            .map(|(kind, amount)| ((*kind).to_owned(), *amount))
            .collect();
    assert_eq!(kinds, expected);
    let first_expiry = &data["creditTransactions"]["edges"][2]["node"];
    assert_eq!(first_expiry["createdAt"], expiring["expiresAt"], "the unheld part expired at the instant");
    let last = &data["creditTransactions"]["edges"][0]["node"];
    assert_eq!(
        last["allocations"][0]["lot"],
        json!({ "id": expiring["id"], "status": "EXPIRED", "remaining": 0, "held": 0 })
    );
    assert_eq!(data["creditBalance"], json!({ "balance": 5, "available": 5, "held": 0 }));
}

async fn holds_draw_on_the_overdraft_and_are_listed_filtered_and_resolved_by_node(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let org = app.create_org("Overdrawn").await;
    let key = app.create_key(&org).await;
    let lot = grant_lot(&app, &org, 10, json!({})).await;
    let set = "mutation($org: ID!) { setOverdraftLimit(organizationId: $org, limit: 50) { spendable } }";
    app.ok(Some(ADMIN_TOKEN), set, json!({ "org": org })).await;
    let created = hold(&app, &key, 40, json!({})).await;
    assert_eq!(
        created["hold"]["allocations"],
        json!([{ "lot": { "id": lot["id"], "held": 10, "remaining": 10 }, "amount": 10 }, { "lot": null, "amount": 30 }])
    );
    assert_eq!(created["balance"], json!({ "balance": 10, "available": -30, "held": 40, "spendable": 20 }));
    // What the hold reserves in the overdraft will be owed when captured: the limit
    // cannot go below it.
    let lower = "mutation($org: ID!, $limit: Credits!) { setOverdraftLimit(organizationId: $org, limit: $limit) { spendable } }";
    for limit in [0, 29] {
        let error = app.fails(Some(ADMIN_TOKEN), lower, json!({ "org": org, "limit": limit }), "BAD_USER_INPUT").await;
        assert_eq!(error["extensions"]["debt"], 30);
    }
    app.fails(Some(&key), &create_hold_query(), json!({ "amount": 21 }), "INSUFFICIENT_CREDITS").await;
    let second = hold(&app, &key, 20, json!({})).await;
    let captured = capture(&app, &key, &created["hold"]["id"], None).await;
    assert_eq!(
        captured["transaction"]["allocations"],
        json!([{ "lot": { "id": lot["id"] }, "amount": -10 }, { "lot": null, "amount": -30 }])
    );
    assert_eq!(captured["balance"], json!({ "balance": -30, "available": -50, "held": 20 }));
    release(&app, &key, &second["hold"]["id"]).await;

    let third = hold(&app, &key, 1, json!({})).await;
    let list = "query($after: String, $statuses: [CreditHoldStatus!]) { creditHolds(first: 2, after: $after, filter: { statuses: $statuses }) { totalCount edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }".to_string();
    let page = app.ok(Some(&key), &list, json!({})).await["creditHolds"].clone();
    assert_eq!(page["totalCount"], 3);
    let ids: Vec<Value> = page["edges"].as_array().unwrap().iter().map(|edge| edge["node"]["id"].clone()).collect();
    assert_eq!(ids, vec![third["hold"]["id"].clone(), second["hold"]["id"].clone()], "newest first");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let next =
        app.ok(Some(&key), &list, json!({ "after": page["pageInfo"]["endCursor"] })).await["creditHolds"].clone();
    assert_eq!(next["edges"][0]["node"], json!({ "id": created["hold"]["id"], "status": "CAPTURED" }));
    assert_eq!(next["pageInfo"]["hasNextPage"], false);
    let filtered =
        app.ok(Some(&key), &list, json!({ "statuses": ["RELEASED", "CAPTURED"] })).await["creditHolds"].clone();
    assert_eq!(filtered["totalCount"], 2);
    app.fails(Some(&key), &list, json!({ "after": "bm9wZQ" }), "BAD_USER_INPUT").await;
    let node = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { id ... on CreditHold { amount status } } }",
            json!({ "id": third["hold"]["id"] }),
        )
        .await;
    assert_eq!(node["node"], json!({ "id": third["hold"]["id"], "amount": 1, "status": "ACTIVE" }));
    let transaction = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { ... on CreditTransaction { holdId } } }",
            json!({ "id": captured["transaction"]["id"] }),
        )
        .await;
    assert_eq!(transaction["node"]["holdId"], created["hold"]["id"]);
}

async fn only_the_holds_organization_may_touch_it_and_sessions_need_consume(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Mine", 100).await;
    let (_, stranger) = app.funded_org("Theirs", 100).await;
    let id = hold(&app, &key, 10, json!({})).await["hold"]["id"].clone();
    app.fails(Some(&stranger), &capture_query(), json!({ "id": id }), "NOT_FOUND").await;
    app.fails(Some(&stranger), &release_query(), json!({ "id": id }), "NOT_FOUND").await;
    let node = app.ok(Some(&stranger), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(node["node"], Value::Null);
    app.fails(Some(&stranger), &create_hold_query(), json!({ "org": org, "amount": 1 }), "FORBIDDEN").await;
    app.fails(None, &create_hold_query(), json!({ "org": org, "amount": 1 }), "UNAUTHENTICATED").await;
    app.fails(None, &release_query(), json!({ "id": id }), "UNAUTHENTICATED").await;
    app.fails(Some(ADMIN_TOKEN), &create_hold_query(), json!({ "amount": 1 }), "BAD_USER_INPUT").await;
    let admin = hold(&app, ADMIN_TOKEN, 5, json!({ "org": org })).await;
    assert_eq!(admin["balance"]["held"], 15);

    let session = "mutation($scopes: [ClientScope!]) { createClientSession(input: { scopes: $scopes }) { token } }";
    let reader = app.ok(Some(&key), session, json!({ "scopes": ["READ"] })).await["createClientSession"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let consumer =
        app.ok(Some(&key), session, json!({ "scopes": ["READ", "CONSUME"] })).await["createClientSession"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
    app.fails(Some(&reader), &create_hold_query(), json!({ "amount": 1 }), "FORBIDDEN").await;
    app.fails(Some(&reader), &release_query(), json!({ "id": id }), "FORBIDDEN").await;
    let listed = app.ok(Some(&reader), "{ creditHolds { totalCount } }", json!({})).await;
    assert_eq!(listed["creditHolds"]["totalCount"], 2);
    let own = hold(&app, &consumer, 1, json!({})).await;
    assert_eq!(capture(&app, &consumer, &own["hold"]["id"], None).await["transaction"]["amount"], -1);
    assert_eq!(release(&app, &consumer, &id).await["status"], "RELEASED");
}

async fn a_hold_changes_held_and_available_live_and_can_make_the_balance_low(engine: Engine) {
    use crate::ws_client::{TRANSPORT_WS, WsClient};
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Live", 100).await;
    app.ok(
        Some(&key),
        "mutation($org: ID) { setLowBalanceThreshold(organizationId: $org, threshold: 50) { balance } }",
        json!({ "org": org }),
    )
    .await;
    let mut socket = WsClient::connect(&app.base, TRANSPORT_WS, &key).await;
    socket.subscribe(false, "c", "subscription { creditBalanceChanged { balance available held } }", json!({})).await;
    socket.subscribe(false, "l", "subscription { lowBalance { balance threshold } }", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = hold(&app, &key, 60, json!({})).await["hold"]["id"].clone();
    let mut changed = None;
    let mut low = None;
    while changed.is_none() || low.is_none() {
        let event = socket.message().await;
        match event["id"].as_str() {
            Some("c") => changed = Some(event["payload"]["data"]["creditBalanceChanged"].clone()),
            Some("l") => low = Some(event["payload"]["data"]["lowBalance"].clone()),
            _ => {}
        }
    }
    assert_eq!(changed.unwrap(), json!({ "balance": 100, "available": 40, "held": 60 }));
    assert_eq!(low.unwrap(), json!({ "balance": 40, "threshold": 50 }), "low compares what is available");
    release(&app, &key, &id).await;
    loop {
        let event = socket.message().await;
        if event["id"] == "c" {
            assert_eq!(
                event["payload"]["data"]["creditBalanceChanged"],
                json!({ "balance": 100, "available": 100, "held": 0 })
            );
            break;
        }
    }
}
