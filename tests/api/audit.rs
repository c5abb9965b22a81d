//! The audit log: every change of money or access made through the API has its row,
//! written with the change (a refused change has none), saying who, from where and under
//! which request id, never a secret; scoped like the rest; append-only in the database.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, TestApp};
use crate::on_both_engines;

on_both_engines!(
    every_change_of_money_or_access_is_audited_with_who_where_and_which_request,
    audit_rows_are_append_only_in_the_database,
    the_money_stripe_moves_is_audited_as_stripes,
);

const AUDIT: &str = "query($o: ID, $f: AuditEventFilter, $n: Int, $a: String) { auditEvents(organizationId: $o, filter: $f, first: $n, after: $a) { edges { cursor node { id organizationId actorType actorId action targetId details clientAddress requestId createdAt } } pageInfo { hasNextPage } } }";

/// A GraphQL call sent with an `x-request-id`; answers `data`, failing on errors.
async fn with_id(app: &TestApp, token: &str, request_id: &str, query: &str, variables: Value) -> Value {
    let body: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// The audit rows `token` sees (of `organization`, or all), newest first.
async fn audit_rows(app: &TestApp, token: &str, organization: Option<&str>, filter: Value) -> Vec<Value> {
    let data = app.ok(Some(token), AUDIT, json!({ "o": organization, "f": filter, "n": 100 })).await;
    data["auditEvents"]["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

async fn every_change_of_money_or_access_is_audited_with_who_where_and_which_request(engine: Engine) {
    let extra = [("CREDITS_WEBHOOK_ALLOW_HTTP", "true"), ("CREDITS_WEBHOOK_ALLOW_PRIVATE", "true")];
    let Some(app) = crate::helpers::spawn_app_with(engine, &extra).await else { return };
    let created = with_id(
        &app,
        ADMIN_TOKEN,
        "req-create",
        "mutation { createOrganization(input: { name: \"Audited\" }) { id } }",
        json!({}),
    )
    .await;
    let org = created["createOrganization"]["id"].as_str().expect("org").to_owned();
    let key = with_id(
        &app,
        ADMIN_TOKEN,
        "req-key",
        "mutation($o: ID!) { createApiKey(input: { organizationId: $o, name: \"ci\" }) { apiKey { id } secret } }",
        json!({ "o": org }),
    )
    .await;
    let (key_id, secret) = (
        key["createApiKey"]["apiKey"]["id"].as_str().expect("key").to_owned(),
        key["createApiKey"]["secret"].as_str().expect("secret").to_owned(),
    );
    let grant = "mutation($o: ID!) { grantCredits(input: { organizationId: $o, amount: 500, description: \"welcome\", idempotencyKey: \"g1\" }) { transaction { id allocations { lot { id } } } } }";
    let granted = with_id(&app, ADMIN_TOKEN, "req-grant", grant, json!({ "o": org })).await;
    let transaction = granted["grantCredits"]["transaction"]["id"].as_str().expect("ctx").to_owned();
    let lot = granted["grantCredits"]["transaction"]["allocations"][0]["lot"]["id"].as_str().expect("lot").to_owned();
    // A replay of the grant changes nothing, so it writes no second row.
    with_id(&app, ADMIN_TOKEN, "req-grant-again", grant, json!({ "o": org })).await;
    let admin = Some(ADMIN_TOKEN);
    app.ok(
        admin,
        "mutation($o: ID!) { setOverdraftLimit(organizationId: $o, limit: 100) { balance } }",
        json!({ "o": org }),
    )
    .await;
    app.ok(Some(&secret), "mutation { setLowBalanceThreshold(threshold: 50) { balance } }", json!({})).await;
    let session = with_id(
        &app,
        &secret,
        "req-session",
        "mutation { createClientSession(input: { scopes: [READ, PURCHASE] }) { id token } }",
        json!({}),
    )
    .await;
    let session_id = session["createClientSession"]["id"].as_str().expect("session").to_owned();
    let session_token = session["createClientSession"]["token"].as_str().expect("token").to_owned();
    app.ok(
        Some(&session_token),
        "mutation { setAutoTopUp(input: { enabled: false, threshold: 10 }) { enabled } }",
        json!({}),
    )
    .await;
    app.ok(Some(&secret), "mutation($s: ID!) { revokeClientSession(id: $s) { id } }", json!({ "s": session_id })).await;
    let endpoint = app
        .ok(
            Some(&secret),
            "mutation { createWebhookEndpoint(input: { url: \"http://127.0.0.1:9/hook?token=receiver-secret\" }) { endpoint { id } secret } }",
            json!({}),
        )
        .await;
    let endpoint_id = endpoint["createWebhookEndpoint"]["endpoint"]["id"].as_str().expect("endpoint").to_owned();
    let signing = endpoint["createWebhookEndpoint"]["secret"].as_str().expect("whsec").to_owned();
    let with_endpoint = json!({ "e": endpoint_id });
    app.ok(
        Some(&secret),
        "mutation($e: ID!) { updateWebhookEndpoint(input: { id: $e, description: \"crm\" }) { id } }",
        with_endpoint.clone(),
    )
    .await;
    app.ok(
        Some(&secret),
        "mutation($e: ID!) { rotateWebhookEndpointSecret(id: $e) { secret } }",
        with_endpoint.clone(),
    )
    .await;
    app.ok(Some(&secret), "mutation($e: ID!) { deleteWebhookEndpoint(id: $e) { id } }", with_endpoint).await;
    app.ok(
        admin,
        "mutation($l: ID!) { voidCreditLot(id: $l, description: \"mistake\") { lot { status } } }",
        json!({ "l": lot }),
    )
    .await;
    // Consumptions and holds are the ledger itself: not audited. Refused changes leave no row.
    app.ok(
        Some(&secret),
        "mutation { consumeCredits(input: { amount: 10, description: \"use\" }) { replayed } }",
        json!({}),
    )
    .await;
    app.ok(
        Some(&secret),
        "mutation { createHold(input: { amount: 5, description: \"job\" }) { hold { id } } }",
        json!({}),
    )
    .await;
    app.fails(
        admin,
        "mutation { voidCreditLot(id: \"lot_missing\", description: \"x\") { lot { id } } }",
        json!({}),
        "NOT_FOUND",
    )
    .await;
    let conflicting = grant.replace("amount: 500", "amount: 501");
    app.fails(admin, &conflicting, json!({ "o": org }), "IDEMPOTENCY_CONFLICT").await;
    with_id(
        &app,
        ADMIN_TOKEN,
        "req-revoke",
        "mutation($k: ID!) { revokeApiKey(id: $k) { id } }",
        json!({ "k": key_id }),
    )
    .await;

    let rows = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!(null)).await;
    let actions: Vec<&str> = rows.iter().rev().map(|row| row["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "CREATE_ORGANIZATION",
            "CREATE_API_KEY",
            "GRANT_CREDITS",
            "SET_OVERDRAFT_LIMIT",
            "SET_LOW_BALANCE_THRESHOLD",
            "CREATE_CLIENT_SESSION",
            "SET_AUTO_TOP_UP",
            "REVOKE_CLIENT_SESSION",
            "CREATE_WEBHOOK_ENDPOINT",
            "UPDATE_WEBHOOK_ENDPOINT",
            "ROTATE_WEBHOOK_ENDPOINT_SECRET",
            "DELETE_WEBHOOK_ENDPOINT",
            "VOID_CREDIT_LOT",
            "REVOKE_API_KEY",
        ]
    );
    let row = |action: &str| rows.iter().find(|row| row["action"] == action).expect(action).clone();
    // Who, what and from where.
    let creation = row("CREATE_ORGANIZATION");
    assert_eq!(
        (creation["organizationId"].as_str(), creation["targetId"].as_str(), creation["actorType"].as_str()),
        (Some(org.as_str()), Some(org.as_str()), Some("ADMIN"))
    );
    assert_eq!(
        (creation["requestId"].as_str(), creation["clientAddress"].as_str()),
        (Some("req-create"), Some("127.0.0.1"))
    );
    assert_eq!(creation["actorId"], Value::Null);
    let granted = row("GRANT_CREDITS");
    assert_eq!(
        (granted["targetId"].as_str(), granted["requestId"].as_str()),
        (Some(transaction.as_str()), Some("req-grant"))
    );
    let details: Value = serde_json::from_str(granted["details"].as_str().unwrap()).expect("JSON details");
    assert_eq!((details["amount"].as_i64(), details["description"].as_str()), (Some(500), Some("welcome")));
    let threshold = row("SET_LOW_BALANCE_THRESHOLD");
    assert_eq!(
        (threshold["actorType"].as_str(), threshold["actorId"].as_str()),
        (Some("API_KEY"), Some(key_id.as_str()))
    );
    let created_session = row("CREATE_CLIENT_SESSION");
    assert_eq!(
        (created_session["targetId"].as_str(), created_session["requestId"].as_str()),
        (Some(session_id.as_str()), Some("req-session"))
    );
    let top_up = row("SET_AUTO_TOP_UP");
    assert_eq!(
        (top_up["actorType"].as_str(), top_up["actorId"].as_str()),
        (Some("CLIENT_SESSION"), Some(session_id.as_str()))
    );
    assert_eq!(row("VOID_CREDIT_LOT")["targetId"].as_str(), Some(lot.as_str()));
    assert_eq!(row("REVOKE_API_KEY")["requestId"].as_str(), Some("req-revoke"));
    // A request without an id gets one of the server's, recorded.
    let generated = row("SET_OVERDRAFT_LIMIT")["requestId"].as_str().expect("generated id").to_owned();
    assert!(generated.len() == 32 && generated.bytes().all(|byte| byte.is_ascii_hexdigit()), "{generated}");
    // Never a secret: not the key's, the session's, the endpoint's, nor the URL's token.
    let all = serde_json::to_string(&rows).unwrap();
    for leaked in [secret.as_str(), session_token.as_str(), signing.as_str(), "receiver-secret", "whsec_"] {
        assert!(!all.contains(leaked), "{leaked} in the audit log: {all}");
    }
    let hook: Value = serde_json::from_str(row("CREATE_WEBHOOK_ENDPOINT")["details"].as_str().unwrap()).unwrap();
    assert_eq!(hook["url"], "http://127.0.0.1:9/hook");

    // Filters and pages.
    let by_key = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!({ "actorTypes": ["API_KEY"] })).await;
    assert!(by_key.len() >= 6 && by_key.iter().all(|row| row["actorType"] == "API_KEY"), "{by_key:?}");
    let grants = audit_rows(&app, ADMIN_TOKEN, None, json!({ "actions": ["GRANT_CREDITS", "VOID_CREDIT_LOT"] })).await;
    assert_eq!(grants.len(), 2);
    let first = app.ok(admin, AUDIT, json!({ "o": org, "n": 5 })).await;
    assert_eq!(first["auditEvents"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["auditEvents"]["edges"][4]["cursor"].as_str().unwrap().to_owned();
    let next = app.ok(admin, AUDIT, json!({ "o": org, "n": 100, "a": cursor })).await;
    assert_eq!(next["auditEvents"]["edges"].as_array().unwrap().len(), rows.len() - 5);
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let later = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!({ "createdAfter": soon })).await;
    assert!(later.is_empty(), "{later:?}");
    let before = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!({ "createdBefore": soon })).await;
    assert_eq!(before.len(), rows.len());

    // Scope: an API key reads its own organization's only; a client session none.
    let (other, other_key) = app.funded_org("Other", 10).await;
    let own = audit_rows(&app, &other_key, None, json!(null)).await;
    assert!(!own.is_empty() && own.iter().all(|row| row["organizationId"] == other.as_str()), "{own:?}");
    app.fails(Some(&other_key), AUDIT, json!({ "o": org }), "FORBIDDEN").await;
    let session = app
        .ok(Some(&other_key), "mutation { createClientSession(input: { scopes: [READ] }) { token } }", json!({}))
        .await;
    let reader = session["createClientSession"]["token"].as_str().unwrap().to_owned();
    app.fails(Some(&reader), AUDIT, json!({}), "FORBIDDEN").await;
    // As a node: for those who may read it.
    let id = rows[0]["id"].as_str().unwrap();
    let node = "query($id: ID!) { node(id: $id) { ... on AuditEvent { action } } }";
    assert_eq!(app.ok(admin, node, json!({ "id": id })).await["node"]["action"], "REVOKE_API_KEY");
    assert_eq!(app.ok(Some(&other_key), node, json!({ "id": id })).await["node"], Value::Null);
}

async fn audit_rows_are_append_only_in_the_database(engine: Engine) {
    use sea_orm::ConnectionTrait;
    let Some(app) = crate::helpers::spawn_app(engine).await else { return };
    let (org, _) = app.funded_org("Append only", 100).await;
    let db = sea_orm::Database::connect(app.database_url()).await.expect("connect");
    let mut refused = vec![
        format!("UPDATE audit_events SET action = 'NOTHING' WHERE organization_id = '{org}'"),
        format!("DELETE FROM audit_events WHERE organization_id = '{org}'"),
        "DELETE FROM audit_events".to_owned(),
    ];
    if engine == Engine::Postgres {
        refused.push("TRUNCATE audit_events".to_owned());
    }
    for statement in refused {
        let error = db.execute_unprepared(&statement).await.expect_err(&statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    let rows = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!(null)).await;
    let mut actions: Vec<&str> = rows.iter().map(|row| row["action"].as_str().unwrap()).collect();
    actions.sort_unstable();
    assert_eq!(actions, ["CREATE_API_KEY", "CREATE_ORGANIZATION", "GRANT_CREDITS"], "untouched");
}

async fn the_money_stripe_moves_is_audited_as_stripes(engine: Engine) {
    use crate::fake_stripe::{event, refunded_charge};
    let Some((app, _fake)) = crate::purchases::stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Buyer", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_starter", "pi_audited").await;
    let refund = event("evt_audited_refund", "charge.refunded", refunded_charge("pi_audited", 999, 500));
    assert_eq!(app.webhook(&refund).await, 200);
    let rows = audit_rows(&app, ADMIN_TOKEN, Some(&org), json!({ "actorTypes": ["STRIPE"] })).await;
    let actions: Vec<&str> = rows.iter().rev().map(|row| row["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["COMPLETE_PURCHASE", "SETTLE_PAYMENT"]);
    for row in &rows {
        assert_eq!((row["targetId"].as_str(), row["actorId"].as_str()), (Some(purchase.as_str()), None));
        assert!(row["requestId"].as_str().is_some_and(|id| !id.is_empty()) && row["clientAddress"].is_string());
    }
    let settled: Value = serde_json::from_str(rows[0]["details"].as_str().unwrap()).unwrap();
    assert_eq!((settled["refunded"].as_i64(), settled["heldBackAfter"].as_i64()), (Some(500), Some(5_005)));
}
