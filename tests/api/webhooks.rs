//! Outgoing webhooks over real HTTP to local receivers: events decided from each
//! committed change and signed (verified by the Standard Webhooks reference library),
//! retries, redirects, `410`, `Retry-After`, resending, secret rotation, request-forgery
//! rules, scopes, nothing lost across SIGKILL, no attempt sent twice by two replicas,
//! and a dead receiver that slows nobody else.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Engine, ServerProcess, TestApp, database, spawn_app, spawn_app_with};
use crate::on_both_engines;
use crate::receiver::{Receiver, Reply, verify_with_reference_library};

on_both_engines!(
    events_are_decided_from_each_change_and_verify_with_the_reference_library,
    retries_follow_the_schedule_and_redirects_gone_and_retry_after_are_honoured,
    a_rotated_secret_signs_beside_the_new_one,
    nothing_is_lost_across_sigkill_and_nothing_exists_for_refused_work,
    secrets_are_sealed_at_rest_and_five_days_of_failures_disable_an_endpoint,
    an_endpoint_deleted_or_disabled_under_a_storm_keeps_no_delivery_waiting,
);

const CREATE: &str = "mutation($org: ID, $url: String!, $types: [String!]) { createWebhookEndpoint(input: { organizationId: $org, url: $url, eventTypes: $types }) { secret endpoint { id organizationId url eventTypes enabled } } }";
const DELIVERIES: &str = "query($id: ID!) { webhookDeliveries(endpointId: $id, first: 50) { edges { node { id eventId status attempts lastStatusCode lastError nextAttemptAt deliveredAt } } } }";
const EVENTS: &str = "query($org: ID) { webhookEvents(organizationId: $org, first: 100) { edges { node { id type organizationId payload createdAt } } } }";

/// The webhook settings every test receiver needs: plain HTTP to 127.0.0.1, and a
/// schedule of seconds.
const LOCAL: [(&str, &str); 3] = [
    ("CREDITS_WEBHOOK_ALLOW_HTTP", "true"),
    ("CREDITS_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("CREDITS_WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s"),
];

async fn endpoint(
    app: &TestApp,
    token: &str,
    org: Option<&str>,
    url: &str,
    types: Option<&[&str]>,
) -> (String, String) {
    let data = app.ok(Some(token), CREATE, json!({ "org": org, "url": url, "types": types })).await;
    let created = &data["createWebhookEndpoint"];
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (created["endpoint"]["id"].as_str().expect("id").to_owned(), secret)
}

async fn grant(app: &TestApp, org: &str, amount: i64) {
    app.grant(org, amount).await;
}

async fn consume(app: &TestApp, key: &str, amount: i64) -> Value {
    app.post(
        Some(key),
        "mutation($amount: Credits!) { consumeCredits(input: { amount: $amount, description: \"use\" }) { balance { available } } }",
        json!({ "amount": amount }),
    )
    .await
    .1
}

fn types_of(received: &[crate::receiver::Received]) -> Vec<String> {
    received.iter().map(|delivery| delivery.json()["type"].as_str().unwrap_or_default().to_owned()).collect()
}

async fn deliveries(app: &TestApp, token: &str, endpoint: &str) -> Vec<Value> {
    let data = app.ok(Some(token), DELIVERIES, json!({ "id": endpoint })).await;
    data["webhookDeliveries"]["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

async fn events_are_decided_from_each_change_and_verify_with_the_reference_library(engine: Engine) {
    let receiver = Receiver::ok().await;
    let Some(app) = spawn_app_with(engine, &LOCAL).await else { return };
    let (org, key) = app.funded_org("Hooks", 0).await;
    let (endpoint_id, secret) = endpoint(&app, &key, None, &receiver.url, None).await;

    grant(&app, &org, 100).await; // recovered (from zero), granted
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 50) { balance } }", json!({})).await;
    consume(&app, &key, 60).await; // low: 100 → 40, below 50
    consume(&app, &key, 40).await; // depleted: 40 → 0
    let refused = consume(&app, &key, 1).await; // refused: no event
    assert_eq!(refused["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS", "{refused}");
    grant(&app, &org, 10).await; // recovered, granted (still below 50: no second low)
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: null) { balance } }", json!({})).await;
    app.ok(Some(&key), "mutation { setLowBalanceThreshold(threshold: 20) { balance } }", json!({})).await; // low: set above 10

    let received = receiver.wait_for(Duration::from_secs(20), |received| received.len() >= 7).await;
    let mut types = types_of(&received);
    types.sort();
    assert_eq!(
        types,
        [
            "credits.balance.depleted",
            "credits.balance.low",
            "credits.balance.low",
            "credits.balance.recovered",
            "credits.balance.recovered",
            "credits.granted",
            "credits.granted",
        ],
    );
    // Every delivery is signed as Standard Webhooks says: the reference library agrees,
    // and refuses them under another secret.
    if let Some((good, bad)) = verify_with_reference_library(&secret, &received) {
        assert_eq!((good.len(), bad.len()), (7, 0), "bad: {bad:?}");
        let (_, wrong) =
            verify_with_reference_library("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &received).expect("node");
        assert_eq!(wrong.len(), 7);
    }
    // The bodies: the balance as committed, the threshold on balance events.
    let low = received
        .iter()
        .map(|delivery| delivery.json())
        .find(|body| body["type"] == "credits.balance.low" && body["data"]["threshold"] == 50)
        .expect("the first low");
    let data = &low["data"];
    assert_eq!(data["organizationId"], org.as_str());
    assert_eq!(
        (data["balance"].as_i64(), data["available"].as_i64(), data["held"].as_i64()),
        (Some(40), Some(40), Some(0))
    );
    assert_eq!(data["spendable"].as_i64(), Some(40));
    assert!(
        data["version"].as_i64().is_some() && data["transactionId"].as_str().is_some_and(|id| id.starts_with("ctx_"))
    );
    assert!(low["timestamp"].as_str().is_some_and(|at| at.ends_with('Z')));
    let granted = received
        .iter()
        .map(|delivery| delivery.json())
        .find(|body| body["type"] == "credits.granted")
        .expect("granted");
    assert!(granted["data"]["transactionId"].as_str().is_some_and(|id| id.starts_with("ctx_")));
    for delivery in &received {
        assert!(delivery.body.len() < 4_096);
        assert_eq!(delivery.headers.get("content-type").map(String::as_str), Some("application/json"));
    }
    // The events, listed newest first, are the ones delivered; each delivery succeeded once.
    let listed = app.ok(Some(&key), EVENTS, json!({})).await;
    let listed: Vec<&Value> =
        listed["webhookEvents"]["edges"].as_array().expect("edges").iter().map(|edge| &edge["node"]).collect();
    assert_eq!(listed.len(), 7, "no event for the refused consume");
    let ids: HashSet<&str> = received.iter().map(|delivery| delivery.id()).collect();
    assert!(listed.iter().all(|event| ids.contains(event["id"].as_str().unwrap_or_default())));
    let at = |event: &&Value| event["createdAt"].as_str().unwrap_or_default().to_owned();
    assert!(listed.windows(2).all(|pair| at(&pair[0]) >= at(&pair[1])), "newest first");
    assert!(listed.iter().all(|event| {
        event["payload"].as_str().is_some_and(|payload| payload.contains(event["type"].as_str().unwrap_or("?")))
    }));
    // Each answer is recorded a moment after the receiver sent it.
    let started = Instant::now();
    let delivered = loop {
        let delivered = deliveries(&app, &key, &endpoint_id).await;
        let recorded = delivered.iter().all(|delivery| delivery["status"] != "PENDING");
        if recorded || started.elapsed() > Duration::from_secs(20) {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered.len(), 7);
    assert!(
        delivered.iter().all(|d| d["status"] == "SUCCEEDED" && d["attempts"] == 1 && d["lastStatusCode"] == 200),
        "{delivered:?}"
    );
    // An endpoint's id refetches it, for its manager.
    let node = app
        .ok(
            Some(&key),
            "query($id: ID!) { node(id: $id) { id ... on WebhookEndpoint { url enabled } } }",
            json!({ "id": endpoint_id }),
        )
        .await;
    assert_eq!(node["node"]["url"], receiver.url.as_str());
}

async fn retries_follow_the_schedule_and_redirects_gone_and_retry_after_are_honoured(engine: Engine) {
    let Some(app) = spawn_app_with(engine, &LOCAL).await else { return };
    let (org, _) = app.funded_org("Retries", 0).await;
    // Each receiver gets the same one event (a grant) and answers its own way.
    let flaky = Receiver::start(|n, _| match n {
        0 => Reply::Status(500),
        1 => Reply::Redirect("http://127.0.0.1:9/elsewhere".into()),
        _ => Reply::Status(200),
    })
    .await;
    let throttled = Receiver::start(|n, _| if n == 0 { Reply::RetryAfter(429, 3) } else { Reply::Status(200) }).await;
    let gone = Receiver::start(|_, _| Reply::Status(410)).await;
    let down = Receiver::start(|_, _| Reply::Status(503)).await;
    let granted = Some(&["credits.granted"][..]);
    let (flaky_id, _) = endpoint(&app, ADMIN_TOKEN, Some(&org), &flaky.url, granted).await;
    let (throttled_id, _) = endpoint(&app, ADMIN_TOKEN, Some(&org), &throttled.url, granted).await;
    let (gone_id, _) = endpoint(&app, ADMIN_TOKEN, Some(&org), &gone.url, granted).await;
    let (down_id, _) = endpoint(&app, ADMIN_TOKEN, Some(&org), &down.url, granted).await;
    grant(&app, &org, 5).await;

    // 500, then a redirect (not followed: a failure), then 200; a second apart.
    let attempts = flaky.wait_for(Duration::from_secs(20), |received| received.len() >= 3).await;
    assert!(attempts.iter().all(|attempt| attempt.id() == attempts[0].id()), "one webhook-id on every retry");
    for pair in attempts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(850) && gap < Duration::from_secs(5), "retry after {gap:?}");
    }
    // An answer is recorded a moment after the receiver sent it.
    let flaky_delivery = wait_for_delivery(&app, &flaky_id, |delivery| delivery["status"] != "PENDING").await;
    assert_eq!(flaky_delivery["status"], "SUCCEEDED");
    assert_eq!(flaky_delivery["attempts"], 3);
    // Retry-After: 3 is honoured over the schedule's second.
    let throttled_attempts = throttled.wait_for(Duration::from_secs(20), |received| received.len() >= 2).await;
    let gap = throttled_attempts[1].at - throttled_attempts[0].at;
    assert!(gap >= Duration::from_millis(2_800), "Retry-After honoured: {gap:?}");
    let throttled_delivery = wait_for_delivery(&app, &throttled_id, |delivery| delivery["status"] != "PENDING").await;
    assert_eq!(
        (throttled_delivery["status"].as_str(), throttled_delivery["attempts"].as_i64()),
        (Some("SUCCEEDED"), Some(2))
    );
    // 410 disables the endpoint at once; nothing more is sent to it.
    gone.wait_for(Duration::from_secs(10), |received| !received.is_empty()).await;
    let disabled = wait_for_endpoint(&app, &gone_id, |endpoint| endpoint["enabled"] == false).await;
    assert!(disabled["disabledReason"].as_str().is_some_and(|why| why.contains("410")), "{disabled}");
    assert_eq!(deliveries(&app, ADMIN_TOKEN, &gone_id).await[0]["status"], "FAILED");
    // Failing every time: the first attempt and three retries, then FAILED.
    down.wait_for(Duration::from_secs(20), |received| received.len() >= 4).await;
    let failed = wait_for_delivery(&app, &down_id, |delivery| delivery["status"] == "FAILED").await;
    assert_eq!((failed["attempts"].as_i64(), failed["lastStatusCode"].as_i64()), (Some(4), Some(503)));
    assert!(failed["nextAttemptAt"].is_null());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(down.received().len(), 4, "nothing after the schedule is spent");
    assert_eq!(gone.received().len(), 1);

    // Resending delivers the same event (the same webhook-id) again.
    let event_id = attempts[0].id().to_owned();
    let resent = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($e: ID!, $v: ID!) { resendWebhookEvent(endpointId: $e, eventId: $v) { status eventId } }",
            json!({ "e": flaky_id, "v": event_id }),
        )
        .await;
    assert_eq!(resent["resendWebhookEvent"]["eventId"], event_id.as_str());
    let again = flaky.wait_for(Duration::from_secs(10), |received| received.len() >= 4).await;
    assert_eq!(again[3].id(), event_id);
    // A disabled endpoint is turned on again by its manager.
    let enabled = app
        .ok(
            Some(ADMIN_TOKEN),
            "mutation($id: ID!) { updateWebhookEndpoint(input: { id: $id, enabled: true }) { enabled disabledReason } }",
            json!({ "id": gone_id }),
        )
        .await;
    assert_eq!(enabled["updateWebhookEndpoint"], json!({ "enabled": true, "disabledReason": null }));
}

async fn wait_for_endpoint(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let data = app
            .ok(
                Some(ADMIN_TOKEN),
                "query($id: ID!) { node(id: $id) { ... on WebhookEndpoint { enabled disabledReason } } }",
                json!({ "id": id }),
            )
            .await;
        if done(&data["node"]) {
            return data["node"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "endpoint never got there: {data}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_delivery(app: &TestApp, endpoint: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(delivery) = deliveries(app, ADMIN_TOKEN, endpoint).await.into_iter().find(|delivery| done(delivery))
        {
            return delivery;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "delivery never got there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_rotated_secret_signs_beside_the_new_one(engine: Engine) {
    let receiver = Receiver::ok().await;
    let Some(app) = spawn_app_with(engine, &LOCAL).await else { return };
    let (org, key) = app.funded_org("Rotation", 0).await;
    let (endpoint_id, old) = endpoint(&app, &key, None, &receiver.url, Some(&["credits.granted"])).await;
    let rotated = app
        .ok(
            Some(&key),
            "mutation($id: ID!) { rotateWebhookEndpointSecret(id: $id) { secret endpoint { id } } }",
            json!({ "id": endpoint_id }),
        )
        .await;
    let new = rotated["rotateWebhookEndpointSecret"]["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    grant(&app, &org, 1).await;
    let received = receiver.wait_for(Duration::from_secs(10), |received| !received.is_empty()).await;
    let signatures = received[0].headers["webhook-signature"].split(' ').count();
    assert_eq!(signatures, 2, "both signatures during the overlap");
    for secret in [&old, &new] {
        if let Some((good, bad)) = verify_with_reference_library(secret, &received) {
            assert_eq!((good.len(), bad.len()), (1, 0), "{bad:?}");
        }
    }
    // The secret never appears anywhere else.
    let listed = app.ok(Some(&key), "{ webhookEndpoints { edges { node { id url } } } }", json!({})).await;
    assert!(!listed.to_string().contains("whsec_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_forgery_is_refused_at_saving_and_at_connecting() {
    let Some(strict) = spawn_app(Engine::Sqlite).await else { return };
    let (_, key) = strict.funded_org("Forgery", 0).await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/hook",
        "https://192.168.1.20/hook",
        "https://user:secret@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let errors = strict.fails(Some(&key), CREATE, json!({ "url": url }), "BAD_USER_INPUT").await;
        assert!(!errors.to_string().is_empty(), "{url}");
    }
    let unknown = strict
        .fails(
            Some(&key),
            CREATE,
            json!({ "url": "https://example.com/hook", "types": ["credits.nope"] }),
            "BAD_USER_INPUT",
        )
        .await;
    assert!(unknown.to_string().contains("credits.nope"));

    // Plain HTTP allowed, private addresses not: an endpoint written straight into the
    // database for a name that resolves to 127.0.0.1 is refused at connection.
    let receiver = Receiver::ok().await;
    let Some(database) = database(Engine::Sqlite).await else { return };
    let server = ServerProcess::start(
        &database.url,
        &[("CREDITS_WEBHOOK_ALLOW_HTTP", "true"), ("CREDITS_WEBHOOK_RETRY_SCHEDULE", "1s")],
    )
    .await;
    let app = TestApp::attach(&server.base, &database.url);
    let org = app.create_org("Rebound").await;
    app.fails(Some(ADMIN_TOKEN), CREATE, json!({ "org": org, "url": receiver.url }), "BAD_USER_INPUT").await;
    let db = credits::db::connect(&database.url).await.expect("connect");
    let id = "whe_planted";
    {
        use sea_orm::{ActiveModelTrait, ActiveValue::Set};
        let now = chrono::Utc::now();
        entity::webhook_endpoint::ActiveModel {
            id: Set(id.to_owned()),
            organization_id: Set(Some(org.clone())),
            url: Set(format!("http://localhost:{}/hook", receiver.addr.port())),
            event_types: Set(String::new()),
            description: Set(None),
            enabled: Set(true),
            disabled_reason: Set(None),
            secret: Set("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            previous_secret: Set(None),
            previous_secret_until: Set(None),
            failing_since: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&db)
        .await
        .expect("plant an endpoint");
    }
    grant(&app, &org, 3).await;
    let failed = wait_for_delivery(&app, id, |delivery| delivery["status"] == "FAILED").await;
    assert!(failed["lastError"].as_str().is_some_and(|error| error.contains("not public")), "{failed}");
    assert!(receiver.received().is_empty(), "nothing reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_scoped_to_their_organizations() {
    let receiver = Receiver::ok().await;
    let everyone = Receiver::ok().await;
    let Some(app) = spawn_app_with(Engine::Sqlite, &LOCAL).await else { return };
    let (a, key_a) = app.funded_org("A", 0).await;
    let (b, key_b) = app.funded_org("B", 0).await;
    let (endpoint_a, _) = endpoint(&app, &key_a, None, &receiver.url, None).await;
    let (global, _) = endpoint(&app, ADMIN_TOKEN, None, &everyone.url, Some(&["credits.granted"])).await;
    // A client session manages nothing.
    let session = app
        .ok(
            Some(&key_a),
            "mutation { createClientSession(input: { scopes: [READ, PURCHASE, CONSUME] }) { token } }",
            json!({}),
        )
        .await["createClientSession"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    app.fails(Some(&session), CREATE, json!({ "url": receiver.url }), "FORBIDDEN").await;
    app.fails(Some(&session), "{ webhookEndpoints { edges { node { id } } } }", json!({}), "FORBIDDEN").await;
    app.fails(Some(&session), EVENTS, json!({}), "FORBIDDEN").await;
    // Another organization's key neither sees nor changes A's endpoint.
    app.fails(Some(&key_b), DELIVERIES, json!({ "id": endpoint_a }), "NOT_FOUND").await;
    app.fails(
        Some(&key_b),
        "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
        json!({ "id": endpoint_a }),
        "NOT_FOUND",
    )
    .await;
    app.fails(Some(&key_b), EVENTS, json!({ "org": a }), "FORBIDDEN").await;
    app.fails(Some(&key_b), CREATE, json!({ "org": a, "url": receiver.url }), "FORBIDDEN").await;
    let node = app.ok(Some(&key_b), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": endpoint_a })).await;
    assert!(node["node"].is_null());
    let node = app.ok(Some(&key_a), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": global })).await;
    assert!(node["node"].is_null(), "an endpoint of every organization is the admin's");
    let listed = app.ok(Some(&key_b), "{ webhookEndpoints { edges { node { id } } } }", json!({})).await;
    assert_eq!(listed["webhookEndpoints"]["edges"], json!([]));
    let all =
        app.ok(Some(ADMIN_TOKEN), "{ webhookEndpoints { edges { node { id organizationId } } } }", json!({})).await;
    assert_eq!(all["webhookEndpoints"]["edges"].as_array().map(Vec::len), Some(2));

    grant(&app, &a, 5).await;
    grant(&app, &b, 7).await;
    // A's endpoint hears only of A; the admin's, of every organization's grants.
    let everything = everyone.wait_for(Duration::from_secs(10), |received| received.len() >= 2).await;
    let organizations: HashSet<String> = everything
        .iter()
        .map(|delivery| delivery.json()["data"]["organizationId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(organizations, HashSet::from([a.clone(), b.clone()]));
    assert!(types_of(&everything).iter().all(|kind| kind == "credits.granted"), "only the types asked for");
    let own = receiver.wait_for(Duration::from_secs(10), |received| received.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received().iter().all(|delivery| delivery.json()["data"]["organizationId"] == a.as_str()));
    assert_eq!(own.len(), 2, "A's grant and its recovery");
    // Deleting an endpoint: nothing more reaches it.
    app.ok(Some(&key_a), "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }", json!({ "id": endpoint_a }))
        .await;
    grant(&app, &a, 1).await;
    everyone.wait_for(Duration::from_secs(10), |received| received.len() >= 3).await;
    assert_eq!(receiver.received().len(), 2);
}

async fn nothing_is_lost_across_sigkill_and_nothing_exists_for_refused_work(engine: Engine) {
    // Half the attempts are answered 500: every event's first (retried a second later).
    let seen = std::sync::Mutex::new(HashSet::new());
    let receiver = Receiver::start(move |_, delivery| {
        if seen.lock().expect("seen").insert(delivery.id().to_owned()) {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let Some(database) = database(engine).await else { return };
    let mut server = ServerProcess::start(&database.url, &LOCAL).await;
    let app = TestApp::attach(&server.base, &database.url);
    let (org, key) = app.funded_org("Storm", 0).await;
    endpoint(&app, ADMIN_TOKEN, Some(&org), &receiver.url, Some(&["credits.granted"])).await;
    // A storm of grants from four clients while the server is killed twice.
    for _round in 0..2 {
        let base = server.base.clone();
        let storm: Vec<_> = (0..4)
            .map(|client| {
                let (base, org) = (base.clone(), org.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    for n in 0..1_000 {
                        let sent = http
                            .post(format!("{base}/graphql"))
                            .bearer_auth(ADMIN_TOKEN)
                            .json(&json!({ "query": "mutation($org: ID!, $k: String!) { grantCredits(input: { organizationId: $org, amount: 1, description: \"storm\", idempotencyKey: $k }) { replayed } }", "variables": { "org": org, "k": format!("{client}-{n}-{}", uuid_like()) } }))
                            .send()
                            .await;
                        if sent.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.kill();
        for task in storm {
            let _ = task.await;
        }
        server.restart().await;
    }
    // Every committed grant has exactly one event, and every event reaches the receiver
    // with a 2xx (the restarted server finishes what the killed one began).
    let db = credits::db::connect(&database.url).await.expect("connect");
    let grants = count(
        &db,
        &format!("SELECT COUNT(*) AS n FROM credit_transactions WHERE organization_id = '{org}' AND kind = 'GRANT'"),
    )
    .await;
    let events = count(
        &db,
        &format!(
            "SELECT COUNT(*) AS n FROM webhook_events WHERE organization_id = '{org}' AND type = 'credits.granted'"
        ),
    )
    .await;
    assert!(grants > 10, "the storm granted something: {grants}");
    assert_eq!(events, grants, "one event per committed grant");
    let delivered = |received: &[crate::receiver::Received]| {
        let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
        for delivery in received {
            *by_id.entry(delivery.id().to_owned()).or_default() += 1;
        }
        by_id
    };
    // An event answered 200 is one received twice or more (its first try was a 500).
    let received = receiver
        .wait_for(Duration::from_secs(90), |received| {
            delivered(received).values().filter(|times| **times >= 2).count() as i64 >= events
        })
        .await;
    assert_eq!(delivered(&received).len() as i64, events, "every event delivered, and no other");
    // Refused work leaves no event: a consume beyond the balance.
    let before = count(&db, &format!("SELECT COUNT(*) AS n FROM webhook_events WHERE organization_id = '{org}'")).await;
    let refused = consume(&app, &key, 1_000_000).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(
        count(&db, &format!("SELECT COUNT(*) AS n FROM webhook_events WHERE organization_id = '{org}'")).await,
        before
    );
    server.kill();
}

/// Endpoints are deleted (by their owner) and disabled (by a receiver's `410`) while
/// grants are committed and fanned out to them: no delivery is left waiting for an
/// endpoint that is gone or off (it would wait forever, and count in the oldest-pending
/// metric). On PostgreSQL a batch that wrote a delivery to an endpoint holds it until it
/// commits, so the deletion or disabling that follows fails that delivery too.
async fn an_endpoint_deleted_or_disabled_under_a_storm_keeps_no_delivery_waiting(engine: Engine) {
    let alive = Receiver::ok().await;
    let gone = Receiver::start(|_, _| Reply::Status(410)).await;
    let Some(app) = spawn_app_with(engine, &LOCAL).await else { return };
    let mut orgs = Vec::new();
    for n in 0..4 {
        orgs.push(app.create_org(&format!("Churn {n}")).await);
    }
    let storming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let storm: Vec<_> = orgs
        .iter()
        .map(|org| {
            let (base, org, storming) = (app.base.clone(), org.clone(), storming.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut granted = 0;
                while storming.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = http
                        .post(format!("{base}/graphql"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&json!({ "query": "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 1, description: \"churn\" }) { replayed } }", "variables": { "org": org } }))
                        .send()
                        .await
                        .expect("grant");
                    assert!(sent.status().is_success());
                    granted += 1;
                }
                granted
            })
        })
        .collect();
    for round in 0..30u64 {
        let (deleted, _) = endpoint(&app, ADMIN_TOKEN, None, &alive.url, None).await;
        endpoint(&app, ADMIN_TOKEN, None, &gone.url, None).await;
        tokio::time::sleep(Duration::from_millis(5 + round % 7 * 6)).await;
        app.ok(
            Some(ADMIN_TOKEN),
            "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
            json!({ "id": deleted }),
        )
        .await;
    }
    storming.store(false, std::sync::atomic::Ordering::Relaxed);
    let granted: u64 = futures::future::join_all(storm).await.into_iter().map(|done| done.expect("storm")).sum();
    assert!(granted > 30, "the storm granted {granted}");
    app.grant(&orgs[0], 1).await; // something for the last endpoint answering 410 to refuse
    // Every endpoint answering 410 is turned off once it is reached.
    let db = credits::db::connect(&app.database_url()).await.expect("connect");
    let started = Instant::now();
    while count(&db, "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE enabled").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "an endpoint answering 410 is still on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An endpoint is turned off first and its deliveries fail just after, in a
    // transaction of their own: they are failed within moments, not at once.
    let waiting_sql = "SELECT COUNT(*) AS n FROM webhook_deliveries d WHERE d.status = 'PENDING' \
         AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled)";
    let written = count(&db, "SELECT COUNT(*) AS n FROM webhook_deliveries").await;
    assert!(written > 30, "deliveries were written to the churning endpoints: {written}");
    let started = Instant::now();
    loop {
        let waiting = count(&db, waiting_sql).await;
        if waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{waiting} deliveries waiting for an endpoint that is gone or off, of {written}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
    )
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .expect("count")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_send_one_attempt_twice() {
    let receiver = Receiver::ok().await;
    let Some(app) = spawn_app_with(Engine::Postgres, &LOCAL).await else { return };
    let replica = app.spawn_replica_with(&LOCAL).await;
    let (org, _) = app.funded_org("Replicas", 0).await;
    endpoint(&app, ADMIN_TOKEN, Some(&org), &receiver.url, Some(&["credits.granted"])).await;
    let other = TestApp::attach(&replica, &app.database_url());
    let grants: Vec<_> = (0..60)
        .map(|n| {
            let target = if n % 2 == 0 { app.base.clone() } else { other.base.clone() };
            let org = org.clone();
            async move {
                let http = reqwest::Client::new();
                http.post(format!("{target}/graphql"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "query": "mutation($org: ID!) { grantCredits(input: { organizationId: $org, amount: 1, description: \"r\" }) { replayed } }", "variables": { "org": org } }))
                    .send()
                    .await
                    .expect("grant")
            }
        })
        .collect();
    futures::future::join_all(grants).await;
    receiver.wait_for(Duration::from_secs(20), |received| received.len() >= 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    let ids: HashSet<&str> = received.iter().map(|delivery| delivery.id()).collect();
    assert_eq!((ids.len(), received.len()), (60, 60), "each event sent once, by one replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_slows_neither_consumes_nor_other_endpoints() {
    let dead = Receiver::start(|_, _| Reply::Hang).await;
    let alive = Receiver::ok().await;
    let Some(app) = spawn_app_with(Engine::Sqlite, &LOCAL).await else { return };
    let (org, key) = app.funded_org("Dead", 1_000).await;
    endpoint(&app, ADMIN_TOKEN, Some(&org), &dead.url, None).await;
    endpoint(&app, ADMIN_TOKEN, Some(&org), &alive.url, Some(&["credits.granted"])).await;
    for _ in 0..10 {
        grant(&app, &org, 1).await;
    }
    let started = Instant::now();
    alive.wait_for(Duration::from_secs(5), |received| received.len() >= 10).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        consume(&app, &key, 1).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(1), "a consume took {slowest:?} while a receiver hung");
    assert!(dead.received().len() <= credits::webhooks::PER_ENDPOINT, "at most its own slots in flight");
}

async fn secrets_are_sealed_at_rest_and_five_days_of_failures_disable_an_endpoint(engine: Engine) {
    use credits::ledger::webhooks::{AttemptOutcome, NewEndpoint, SecretSeal};
    use credits::ledger::{Amount, Clock, GrantRequest, Ledger};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let Some(database) = database(engine).await else { return };
    let db = credits::db::connect(&database.url).await.expect("connect");
    credits::db::migrate(&db).await.expect("migrate");
    let seconds = Arc::new(AtomicI64::new(0));
    let read = seconds.clone();
    let base = chrono::DateTime::from_timestamp(2_000_000_000, 0).expect("base");
    let clock = Clock::from_fn(move || base + chrono::Duration::seconds(read.load(Ordering::SeqCst)));
    let seal = SecretSeal::new(&[7u8; 32]).expect("seal");
    let ledger = Ledger::new(db.clone()).with_clock(clock.clone()).with_secret_seal(seal);
    let org = ledger.create_organization("Sealed", None).await.expect("organization").id;
    let hook = |organization: &str, url: &str, event_types| NewEndpoint {
        organization_id: Some(organization.to_owned()),
        url: url.to_owned(),
        event_types,
        description: None,
    };
    let new = hook(&org, "https://example.com/hook", vec![]);
    let (endpoint, secret) = ledger.create_webhook_endpoint(new).await.expect("endpoint");
    // At rest the secret is sealed: the row holds no trace of it.
    let stored =
        count_text(&db, &format!("SELECT secret AS t FROM webhook_endpoints WHERE id = '{}'", endpoint.id)).await;
    assert!(stored.starts_with("sealed:v1:") && !stored.contains(&secret[6..]), "{stored}");
    let grant = |amount| {
        GrantRequest::new(org.clone(), Amount::parse(amount).expect("amount"), "g".into(), None).expect("grant")
    };
    // One more endpoint of the organization's, subscribed to two types (one of them the
    // recovery's), and one of another's: each event's deliveries are matched in the database.
    use credits::ledger::EventType::{BalanceRecovered, Voided};
    let typed = hook(&org, "https://example.com/typed", vec![Voided, BalanceRecovered]);
    let (typed, _) = ledger.create_webhook_endpoint(typed).await.expect("typed endpoint");
    let other = ledger.create_organization("Other", None).await.expect("organization").id;
    let elsewhere = hook(&other, "https://example.com/other", vec![]);
    let (elsewhere, _) = ledger.create_webhook_endpoint(elsewhere).await.expect("other endpoint");
    ledger.grant(grant(5)).await.expect("granted");
    // The grant's two events (recovered, granted) came with their deliveries, written in its
    // transaction: nothing is left for a dispatcher to fan out.
    let deliveries = |endpoint: String| {
        let db = db.clone();
        async move {
            count_text(
                &db,
                &format!("SELECT CAST(count(*) AS TEXT) AS t FROM webhook_deliveries WHERE endpoint_id = '{endpoint}'"),
            )
            .await
        }
    };
    assert_eq!(deliveries(endpoint.id.clone()).await, "2");
    assert_eq!(deliveries(typed.id.clone()).await, "1");
    assert_eq!(deliveries(elsewhere.id.clone()).await, "0");
    assert_eq!(ledger.fan_out_events(100).await.expect("fan out"), 0);
    // A claim leaving out the endpoints at their limit takes the free one's.
    let busy = [endpoint.id.clone(), elsewhere.id.clone()];
    let claimed = ledger.claim_deliveries(10, chrono::Duration::seconds(60), &busy).await.expect("claim");
    assert_eq!(claimed.iter().map(|delivery| delivery.endpoint_id.as_str()).collect::<Vec<_>>(), [typed.id.as_str()]);
    ledger.delete_webhook_endpoint(&typed.id).await.expect("deleted");
    ledger.delete_webhook_endpoint(&elsewhere.id).await.expect("deleted");
    // An endpoint the dispatcher has no room for is left out of its claim.
    let busy = [endpoint.id.clone()];
    assert!(ledger.claim_deliveries(10, chrono::Duration::seconds(60), &busy).await.expect("claim").is_empty());
    let claimed = ledger.claim_deliveries(10, chrono::Duration::seconds(60), &[]).await.expect("claim");
    assert_eq!(claimed.len(), 2, "recovered and granted");
    assert!(claimed.iter().all(|delivery| delivery.secrets == [secret.clone()]));
    // Given back unattempted (by key), they are claimed again at once, and nothing else is.
    let mut ids: Vec<String> = claimed.iter().map(|delivery| delivery.id.clone()).collect();
    ledger.release_deliveries(&ids[..1]).await.expect("given back");
    let again = ledger.claim_deliveries(10, chrono::Duration::seconds(60), &[]).await.expect("claim");
    assert_eq!(again.iter().map(|delivery| delivery.id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
    ledger.release_deliveries(&ids).await.expect("given back");
    let mut again: Vec<String> = ledger
        .claim_deliveries(10, chrono::Duration::seconds(60), &[])
        .await
        .expect("claim")
        .into_iter()
        .map(|delivery| delivery.id)
        .collect();
    again.sort();
    ids.sort();
    assert_eq!(again, ids);
    let keyless = Ledger::new(db.clone()).with_clock(clock.clone());
    seconds.store(61, Ordering::SeqCst);
    assert!(
        keyless
            .claim_deliveries(10, chrono::Duration::seconds(60), &[])
            .await
            .expect("claim")
            .iter()
            .all(|d| d.secrets.is_empty())
    );
    // Failing from day 0: still on at day 4, disabled past day 5, its pending deliveries failed.
    let fail = |retry_in: i64| AttemptOutcome::NotDelivered {
        status_code: Some(500),
        error: "the endpoint answered 500".into(),
        retry_at: Some(base + chrono::Duration::seconds(seconds.load(Ordering::SeqCst) + retry_in)),
        disable: None,
    };
    for (day, disabled) in [(0, false), (4, false), (5, true)] {
        seconds.store(day * 86_400 + 200, Ordering::SeqCst);
        let claimed = ledger.claim_deliveries(1, chrono::Duration::seconds(60), &[]).await.expect("claim");
        assert_eq!(claimed.len(), 1, "day {day}");
        let attempt = [(claimed[0].clone(), fail(60))];
        assert_eq!(ledger.record_attempts(&attempt, chrono::Duration::days(5)).await.expect("record"), 1);
        let endpoint = ledger.webhook_endpoint(&endpoint.id).await.expect("read").expect("endpoint");
        assert_eq!(!endpoint.enabled, disabled, "day {day}");
        if disabled {
            assert!(endpoint.disabled_reason.is_some_and(|why| why.contains("five days")));
        }
    }
    let pending = count_text(&db, &format!("SELECT CAST(COUNT(*) AS TEXT) AS t FROM webhook_deliveries WHERE endpoint_id = '{}' AND status = 'PENDING'", endpoint.id)).await;
    assert_eq!(pending, "0");
    // An event written by a version that left its deliveries to the dispatcher (marked
    // not fanned out) still gets them, from the dispatcher's sweep.
    let later = hook(&org, "https://example.com/later", vec![]);
    let (later, _) = ledger.create_webhook_endpoint(later).await.expect("endpoint");
    let legacy = format!(
        "INSERT INTO webhook_events (id, organization_id, type, payload, created_at, fanned_out) VALUES \
         ('evt_legacy', '{org}', 'credits.granted', '{{}}', '2033-05-18T03:33:20+00:00', {})",
        if engine == Engine::Postgres { "false" } else { "0" }
    );
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&legacy).await.expect("legacy event");
    assert_eq!(ledger.fan_out_events(100).await.expect("fan out"), 1);
    assert_eq!(deliveries(later.id.clone()).await, "1");
    assert_eq!(ledger.fan_out_events(100).await.expect("fan out"), 0);
}

async fn count_text(db: &sea_orm::DatabaseConnection, sql: &str) -> String {
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .expect("query")
        .expect("a row");
    row.try_get::<String>("", "t").expect("t")
}
