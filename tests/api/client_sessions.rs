//! Client sessions: short-lived, scoped browser tokens minted by an API key or the admin.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, spawn_app};
use crate::on_both_engines;
use crate::ws_client::{Received, TRANSPORT_WS, WsClient};

on_both_engines!(
    each_scope_allows_exactly_what_the_contract_says,
    sessions_are_minted_by_their_organizations_key_or_the_admin_only,
    ttl_defaults_to_an_hour_and_is_bounded_by_a_day,
    an_expired_session_is_unauthenticated_and_loses_its_websocket,
    a_revoked_session_is_unauthenticated_at_once_and_loses_its_websockets,
    revoking_an_api_key_revokes_the_sessions_it_created,
    a_consume_only_payload_refuses_every_field_that_leads_elsewhere,
);

const CREATE: &str = "mutation($org: ID, $scopes: [ClientScope!], $ttl: Int) { createClientSession(input: { organizationId: $org, scopes: $scopes, ttlSeconds: $ttl }) { id token organizationId scopes expiresAt createdAt revokedAt } }";
const REVOKE: &str = "mutation($id: ID!) { revokeClientSession(id: $id) { id token revokedAt } }";
const CONSUME: &str = "mutation { consumeCredits(input: { amount: 1, description: \"session\" }) { transaction { id amount balanceAfter } balance { balance } } }";
const PURCHASE: &str = "mutation { purchasePackage(input: { packageId: \"credits_starter\", successUrl: \"https://a.example/ok\", cancelUrl: \"https://a.example/no\" }) { checkoutUrl } }";
const CHANGED: &str = "subscription { creditBalanceChanged { balance } }";
const SET_AUTO_TOP_UP: &str = "mutation($o: ID) { setAutoTopUp(input: { organizationId: $o, enabled: false, monthlyLimit: 3 }) { enabled monthlyLimit } }";

impl TestApp {
    /// Mints a session with `key` (an API key or, naming `org`, the admin token); returns (id, token).
    async fn session(
        &self,
        key: &str,
        org: Option<&str>,
        scopes: Option<&[&str]>,
        ttl: Option<i64>,
    ) -> (String, String) {
        let data = self.ok(Some(key), CREATE, json!({ "org": org, "scopes": scopes, "ttl": ttl })).await;
        let session = &data["createClientSession"];
        (session["id"].as_str().unwrap().to_owned(), session["token"].as_str().unwrap().to_owned())
    }

    async fn api_key_with_id(&self, org: &str) -> (String, String) {
        let data = self
            .ok(Some(ADMIN_TOKEN), "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"backend\" }) { secret apiKey { id } } }", json!({ "org": org }))
            .await;
        let key = &data["createApiKey"];
        (key["apiKey"]["id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
    }
}

/// The error code of a request (`None` when it succeeded).
async fn code(app: &TestApp, token: &str, query: &str, variables: Value) -> Option<String> {
    let (_, body) = app.post(Some(token), query, variables).await;
    body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned)
}

async fn closed_within(ws: &mut WsClient, deadline: Instant) -> u16 {
    loop {
        match ws.receive(deadline.saturating_duration_since(Instant::now())).await {
            Received::Closed(code) => return code,
            Received::Json(_) => continue,
            Received::Nothing => panic!("the socket was not closed in time"),
        }
    }
}

async fn each_scope_allows_exactly_what_the_contract_says(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Scoped", 100).await;
    let (other_org, _) = app.funded_org("Other", 100).await;
    let (key_id, _) = app.api_key_with_id(&org).await;
    let reads = [
        "{ creditBalance { balance } }",
        "{ creditTransactions { totalCount edges { node { kind } } } }",
        "{ creditPurchases { totalCount } }",
        "{ organization { id name balance { balance } } }",
        "{ organization { autoTopUp { enabled monthlyLimit topUpsThisMonth paymentMethod { last4 } } } }",
    ];
    let forbidden_for_all = [
        (
            "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 5, description: \"x\" }) { balance { balance } } }",
            json!({ "org": org }),
        ),
        ("mutation { setLowBalanceThreshold(threshold: 5) { isLow } }", json!({})),
        ("mutation { createOrganization(input: { name: \"x\" }) { id } }", json!({})),
        (
            "mutation($org: ID!) { createApiKey(input: { organizationId: $org, name: \"x\" }) { secret } }",
            json!({ "org": org }),
        ),
        ("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key_id })),
        ("mutation { createClientSession(input: {}) { token } }", json!({})),
    ];
    let cases: [(&[&str], bool, bool, bool); 4] = [
        (&["READ"], true, false, false),
        (&["PURCHASE"], false, true, false),
        (&["CONSUME"], false, false, true),
        (&["READ", "PURCHASE", "CONSUME"], true, true, true),
    ];
    for (scopes, read, purchase, consume) in cases {
        let (id, token) = app.session(&key, None, Some(scopes), None).await;
        assert!(token.starts_with("cst_") && id.starts_with("cses_"), "{id} {token}");
        for query in reads {
            let expected = if read { None } else { Some("FORBIDDEN".to_owned()) };
            assert_eq!(code(&app, &token, query, json!({})).await, expected, "{scopes:?} {query}");
        }
        // Reading another organization is never allowed.
        let other = code(
            &app,
            &token,
            "query($o: ID) { creditBalance(organizationId: $o) { balance } }",
            json!({ "o": other_org }),
        )
        .await;
        assert_eq!(other.as_deref(), Some("FORBIDDEN"), "{scopes:?}");
        let other = code(&app, &token, SET_AUTO_TOP_UP, json!({ "o": other_org })).await;
        assert_eq!(other.as_deref(), Some("FORBIDDEN"), "{scopes:?}");
        // PURCHASE reaches the payment provider (not configured here); without it, FORBIDDEN.
        let expected = if purchase { "PAYMENT_PROVIDER_NOT_CONFIGURED" } else { "FORBIDDEN" };
        assert_eq!(code(&app, &token, PURCHASE, json!({})).await.as_deref(), Some(expected), "{scopes:?}");
        // PURCHASE also sets auto top-up (the console's switch).
        if purchase {
            let set = app.ok(Some(&token), SET_AUTO_TOP_UP, json!({})).await;
            assert_eq!(set["setAutoTopUp"], json!({ "enabled": false, "monthlyLimit": 3 }), "{scopes:?}");
        } else {
            assert_eq!(
                code(&app, &token, SET_AUTO_TOP_UP, json!({})).await.as_deref(),
                Some("FORBIDDEN"),
                "{scopes:?}"
            );
        }
        if consume {
            // Even without READ, the payload of its own consume is readable.
            let data = app.ok(Some(&token), CONSUME, json!({})).await;
            assert_eq!(data["consumeCredits"]["transaction"]["amount"], -1);
            assert!(data["consumeCredits"]["balance"]["balance"].is_number());
        } else {
            assert_eq!(code(&app, &token, CONSUME, json!({})).await.as_deref(), Some("FORBIDDEN"), "{scopes:?}");
        }
        for (query, variables) in &forbidden_for_all {
            assert_eq!(
                code(&app, &token, query, variables.clone()).await.as_deref(),
                Some("FORBIDDEN"),
                "{scopes:?} {query}"
            );
        }
        // Neither its own session nor another may be revoked by a session.
        assert_eq!(code(&app, &token, REVOKE, json!({ "id": id })).await.as_deref(), Some("FORBIDDEN"));
        // Subscriptions need READ too.
        let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &token).await;
        ws.subscribe(false, "c", CHANGED, json!({})).await;
        if read {
            tokio::time::sleep(Duration::from_millis(200)).await;
            app.grant(&org, 1).await;
            let message = ws.message().await;
            assert_eq!(message["type"], "next", "{message}");
        } else {
            let message = ws.message().await;
            assert_eq!(message["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{message}");
        }
    }
    // Node: a READ session sees its organization's objects, never credentials.
    let (session_id, token) = app.session(&key, None, Some(&["READ"]), None).await;
    let node = "query($id: ID!) { node(id: $id) { id } }";
    assert_eq!(app.ok(Some(&token), node, json!({ "id": org })).await["node"]["id"], org);
    assert!(app.ok(Some(&token), node, json!({ "id": other_org })).await["node"].is_null());
    assert!(app.ok(Some(&token), node, json!({ "id": key_id })).await["node"].is_null());
    assert!(app.ok(Some(&token), node, json!({ "id": session_id })).await["node"].is_null());
    // The key and the admin see the session, without its token.
    let query = "query($id: ID!) { node(id: $id) { id ... on ClientSession { token scopes organizationId } } }";
    for viewer in [key.as_str(), ADMIN_TOKEN] {
        let node = app.ok(Some(viewer), query, json!({ "id": session_id })).await["node"].clone();
        assert_eq!(node, json!({ "id": session_id, "token": null, "scopes": ["READ"], "organizationId": org }));
    }
}

async fn sessions_are_minted_by_their_organizations_key_or_the_admin_only(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Minting", 0).await;
    let (other_org, other_key) = app.funded_org("Else", 0).await;
    // Defaults: READ and PURCHASE.
    let data = app.ok(Some(&key), CREATE, json!({})).await["createClientSession"].clone();
    assert_eq!(data["scopes"], json!(["READ", "PURCHASE"]));
    assert_eq!(data["organizationId"], org);
    assert!(data["revokedAt"].is_null());
    // A key names only its own organization; the admin must name one.
    assert_eq!(code(&app, &key, CREATE, json!({ "org": other_org })).await.as_deref(), Some("FORBIDDEN"));
    assert_eq!(code(&app, ADMIN_TOKEN, CREATE, json!({})).await.as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(code(&app, "cst_nonsense", CREATE, json!({})).await.as_deref(), Some("UNAUTHENTICATED"));
    let (id, _) = app.session(ADMIN_TOKEN, Some(&org), Some(&["CONSUME"]), None).await;
    // Another organization's key cannot revoke it; its own key and the admin can.
    assert_eq!(code(&app, &other_key, REVOKE, json!({ "id": id })).await.as_deref(), Some("NOT_FOUND"));
    let revoked = app.ok(Some(&key), REVOKE, json!({ "id": id })).await["revokeClientSession"].clone();
    assert!(revoked["revokedAt"].is_string() && revoked["token"].is_null(), "{revoked}");
    let again = app.ok(Some(ADMIN_TOKEN), REVOKE, json!({ "id": id })).await["revokeClientSession"].clone();
    assert_eq!(again["revokedAt"], revoked["revokedAt"], "revoking twice keeps the first time");
    assert_eq!(code(&app, ADMIN_TOKEN, REVOKE, json!({ "id": "cses_unknown" })).await.as_deref(), Some("NOT_FOUND"));
    // An empty scope list is refused.
    assert_eq!(code(&app, &key, CREATE, json!({ "scopes": [] })).await.as_deref(), Some("BAD_USER_INPUT"));
}

async fn ttl_defaults_to_an_hour_and_is_bounded_by_a_day(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Ttl", 0).await;
    let lifetime = |session: &Value| {
        let at = |field: &str| chrono::DateTime::parse_from_rfc3339(session[field].as_str().unwrap()).unwrap();
        (at("expiresAt") - at("createdAt")).num_seconds()
    };
    let data = app.ok(Some(&key), CREATE, json!({})).await;
    assert_eq!(lifetime(&data["createClientSession"]), 3600);
    let data = app.ok(Some(&key), CREATE, json!({ "ttl": 86_400 })).await;
    assert_eq!(lifetime(&data["createClientSession"]), 86_400);
    for ttl in [86_401, 0, -1] {
        assert_eq!(code(&app, &key, CREATE, json!({ "ttl": ttl })).await.as_deref(), Some("BAD_USER_INPUT"), "{ttl}");
    }
}

async fn an_expired_session_is_unauthenticated_and_loses_its_websocket(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Expiring", 10).await;
    let (_, token) = app.session(&key, None, Some(&["READ"]), Some(1)).await;
    let started = Instant::now();
    assert_eq!(app.balance(&token).await, 10);
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &token).await;
    ws.subscribe(false, "c", CHANGED, json!({})).await;
    assert_eq!(closed_within(&mut ws, started + Duration::from_millis(2500)).await, 4403);
    app.fails(Some(&token), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    let mut ws = WsClient::init(&app.base, TRANSPORT_WS, json!({ "authorization": token })).await;
    assert_eq!(ws.closed().await, 4403);
}

async fn a_revoked_session_is_unauthenticated_at_once_and_loses_its_websockets(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (_, key) = app.funded_org("Revoking", 10).await;
    let mut bases = vec![app.base.clone()];
    if engine == Engine::Postgres {
        bases.push(app.spawn_replica().await);
    }
    let (id, token) = app.session(&key, None, None, None).await;
    let (_, bystander) = app.session(&key, None, None, None).await;
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for base in &bases {
        let mut ws = WsClient::connect(base, TRANSPORT_WS, &token).await;
        ws.subscribe(false, "c", CHANGED, json!({})).await;
        doomed.push(ws);
        let mut ws = WsClient::connect(base, TRANSPORT_WS, &bystander).await;
        ws.subscribe(false, "c", CHANGED, json!({})).await;
        kept.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = Instant::now();
    app.ok(Some(&key), REVOKE, json!({ "id": id })).await;
    for ws in &mut doomed {
        assert_eq!(closed_within(ws, revoked + Duration::from_secs(1)).await, 4403);
    }
    app.fails(Some(&token), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    assert_eq!(app.balance(&bystander).await, 10);
    app.ok(Some(&key), CONSUME, json!({})).await;
    for ws in &mut kept {
        assert_eq!(ws.message().await["payload"]["data"]["creditBalanceChanged"]["balance"], 9);
    }
}

async fn revoking_an_api_key_revokes_the_sessions_it_created(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, _) = app.funded_org("Cascade", 10).await;
    let (key_id, key) = app.api_key_with_id(&org).await;
    let (_, minted) = app.session(&key, None, None, None).await;
    let (_, by_admin) = app.session(ADMIN_TOKEN, Some(&org), None, None).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, &minted).await;
    ws.subscribe(false, "c", CHANGED, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked = Instant::now();
    app.ok(Some(ADMIN_TOKEN), "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({ "id": key_id })).await;
    assert_eq!(closed_within(&mut ws, revoked + Duration::from_secs(1)).await, 4403);
    app.fails(Some(&minted), "{ creditBalance { balance } }", json!({}), "UNAUTHENTICATED").await;
    // A session the admin minted is not the key's.
    assert_eq!(app.balance(&by_admin).await, 10);
}

/// The `(path, code)` of every error of a response.
fn error_paths(body: &Value) -> Vec<(Value, String)> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|error| (error["path"].clone(), error["extensions"]["code"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

async fn a_consume_only_payload_refuses_every_field_that_leads_elsewhere(engine: Engine) {
    let Some(app) = spawn_app(engine).await else { return };
    let (org, key) = app.funded_org("Confidential Name", 0).await;
    let grant = "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 100, description: \"confidential grant note\" }) { balance { balance } } }";
    app.ok(Some(ADMIN_TOKEN), grant, json!({ "org": org })).await;
    let (_, consume_only) = app.session(&key, None, Some(&["CONSUME"]), None).await;
    let (_, reader) = app.session(&key, None, Some(&["READ", "CONSUME"]), None).await;
    let forbidden = |path: Value| (path, "FORBIDDEN".to_owned());
    let secrets_absent = |body: &Value| {
        let text = body.to_string();
        assert!(!text.contains("Confidential Name") && !text.contains("confidential grant note"), "{text}");
    };

    // The consume itself, its scalars and allocation amounts: readable; the lot an
    // allocation leads to (and that lot's source) is not. The lot is nullable: null there.
    let consume = "mutation { consumeCredits(input: { amount: 1, description: \"own\" }) { replayed balance { balance available held spendable } transaction { id amount balanceAfter description allocations { amount lot { id source { description } } } } } }";
    let (status, body) = app.post(Some(&consume_only), consume, json!({})).await;
    assert_eq!(status, 200, "{body}");
    secrets_absent(&body);
    assert_eq!(error_paths(&body), vec![forbidden(json!(["consumeCredits", "transaction", "allocations", 0, "lot"]))]);
    let payload = &body["data"]["consumeCredits"];
    assert_eq!(payload["balance"]["balance"], 99, "{body}");
    assert_eq!(payload["transaction"]["amount"], -1);
    assert_eq!(payload["transaction"]["description"], "own");
    assert_eq!(payload["transaction"]["allocations"], json!([{ "amount": -1, "lot": null }]));

    // `organization` is non-null: the error nulls its nearest nullable parent, here the
    // whole `data`; the consume is committed all the same.
    for (field, path) in [
        ("transaction { id organization { name } }", json!(["consumeCredits", "transaction", "organization"])),
        ("balance { balance organization { name } }", json!(["consumeCredits", "balance", "organization"])),
    ] {
        let query =
            format!("mutation {{ consumeCredits(input: {{ amount: 1, description: \"own\" }}) {{ {field} }} }}");
        let (status, body) = app.post(Some(&consume_only), &query, json!({})).await;
        assert_eq!(status, 200, "{body}");
        secrets_absent(&body);
        assert_eq!(error_paths(&body), vec![forbidden(path)], "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(app.balance(&key).await, 97, "both refused reads' consumes were committed");

    // Holds: the hold and its allocation amounts, yes; their lots, no.
    let create = "mutation { createHold(input: { amount: 5, description: \"own\" }) { hold { id amount status allocations { amount lot { id } } } balance { held } } }";
    let (_, body) = app.post(Some(&consume_only), create, json!({})).await;
    assert_eq!(error_paths(&body), vec![forbidden(json!(["createHold", "hold", "allocations", 0, "lot"]))]);
    assert_eq!(body["data"]["createHold"]["balance"]["held"], 5, "{body}");
    assert_eq!(body["data"]["createHold"]["hold"]["allocations"], json!([{ "amount": 5, "lot": null }]));
    let hold = body["data"]["createHold"]["hold"]["id"].clone();
    let capture = "mutation($id: ID!) { captureHold(input: { id: $id, amount: 2 }) { hold { status } transaction { amount allocations { amount lot { id } } } balance { balance held } replayed } }";
    let (_, body) = app.post(Some(&consume_only), capture, json!({ "id": hold })).await;
    secrets_absent(&body);
    assert_eq!(
        error_paths(&body),
        vec![forbidden(json!(["captureHold", "transaction", "allocations", 0, "lot"]))],
        "{body}"
    );
    assert_eq!(body["data"]["captureHold"]["balance"], json!({ "balance": 95, "held": 0 }));
    assert_eq!(body["data"]["captureHold"]["hold"]["status"], "CAPTURED");
    let create = "mutation { createHold(input: { amount: 3, description: \"own\" }) { hold { id } } }";
    let hold = app.ok(Some(&consume_only), create, json!({})).await["createHold"]["hold"]["id"].clone();
    let release = "mutation($id: ID!) { releaseHold(id: $id) { status allocations { amount lot { id source { description } } } } }";
    let (_, body) = app.post(Some(&consume_only), release, json!({ "id": hold })).await;
    secrets_absent(&body);
    assert_eq!(error_paths(&body), vec![forbidden(json!(["releaseHold", "allocations", 0, "lot"]))], "{body}");
    assert_eq!(body["data"]["releaseHold"]["status"], "RELEASED");

    // With READ as well, every one of those fields is there.
    let everything = "mutation { consumeCredits(input: { amount: 1, description: \"own\" }) { balance { organization { name } } transaction { organization { name } allocations { lot { source { description } } } } } }";
    let data = app.ok(Some(&reader), everything, json!({})).await;
    let payload = &data["consumeCredits"];
    assert_eq!(payload["balance"]["organization"]["name"], "Confidential Name");
    assert_eq!(payload["transaction"]["organization"]["name"], "Confidential Name");
    assert_eq!(payload["transaction"]["allocations"][0]["lot"]["source"]["description"], "confidential grant note");
    let create = "mutation { createHold(input: { amount: 1, description: \"own\" }) { hold { allocations { lot { source { description } } } } } }";
    let data = app.ok(Some(&reader), create, json!({})).await;
    assert_eq!(data["createHold"]["hold"]["allocations"][0]["lot"]["source"]["description"], "confidential grant note");
    assert_eq!(app.balance(&key).await, 94);
}
