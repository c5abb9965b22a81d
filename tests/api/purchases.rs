//! Buying credit packages: Checkout through a fake Stripe, credits by signed webhooks.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::fake_stripe::{Behaviour, FakeStripe, event, paid_session, refunded_charge};
use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, spawn_app, spawn_app_with};
use crate::on_both_engines;

const WEBHOOK_SECRET: &str = "whsec_test_secret";
const STRIPE_KEY: &str = "sk_test_fake_key_123";
const PURCHASE: &str = "mutation($package: ID!, $success: String, $cancel: String) { purchasePackage(input: { packageId: $package, successUrl: $success, cancelUrl: $cancel }) { checkoutSessionId checkoutUrl purchase { id organizationId packageId status credits amount currency checkoutSessionId createdAt updatedAt } } }";

on_both_engines!(
    purchase_then_signed_completion_credits_exactly_once,
    a_refund_racing_its_payment_is_never_lost,
    async_payments_and_closed_sessions_follow_stripe,
    refunds_take_back_the_refunded_share_never_below_zero,
    mismatched_or_unknown_sessions_credit_nothing,
);

async fn stripe_app(engine: Engine) -> Option<(TestApp, FakeStripe)> {
    let fake = FakeStripe::start().await;
    let app = spawn_app_with(
        engine,
        &[
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_API_BASE", fake.base.as_str()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("CREDITS_STRIPE_TIMEOUT_MS", "1000"),
            ("CREDITS_CHECKOUT_SUCCESS_URL", "https://app.example/billing/success"),
            ("CREDITS_CHECKOUT_CANCEL_URL", "https://app.example/billing/cancel"),
        ],
    )
    .await?;
    Some((app, fake))
}

impl TestApp {
    /// Delivers a webhook signed as Stripe signs it; returns the status.
    pub async fn webhook(&self, payload: &Value) -> u16 {
        let body = payload.to_string();
        let signature =
            credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, chrono::Utc::now().timestamp());
        self.raw_webhook(body, Some(signature)).await
    }

    /// Delivers a webhook body with the given signature header.
    pub async fn raw_webhook(&self, body: String, signature: Option<String>) -> u16 {
        let mut request = self.client.post(format!("{}/webhooks/stripe", self.base)).body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send().await.expect("webhook").status().as_u16()
    }

    /// Starts a purchase of `package` with an API key; returns the payload.
    pub async fn purchase(&self, key: &str, package: &str) -> Value {
        self.ok(Some(key), PURCHASE, json!({ "package": package })).await["purchasePackage"].clone()
    }

    /// Starts a purchase of `package`; returns its Checkout Session id and purchase id.
    pub async fn start_purchase(&self, key: &str, package: &str) -> (String, String) {
        let started = self.purchase(key, package).await;
        let id = |value: &Value| value.as_str().expect("id").to_owned();
        (id(&started["checkoutSessionId"]), id(&started["purchase"]["id"]))
    }

    /// The purchase's status as `creditPurchases` shows it.
    pub async fn purchase_status(&self, key: &str, purchase_id: &str) -> String {
        let data =
            self.ok(Some(key), "{ creditPurchases(first: 100) { edges { node { id status } } } }", json!({})).await;
        data["creditPurchases"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|edge| edge["node"]["id"] == purchase_id)
            .map(|edge| edge["node"]["status"].as_str().unwrap().to_owned())
            .expect("purchase listed")
    }
}

fn metadata(org: &str, package: &str, purchase: &str) -> Value {
    json!({ "organization_id": org, "package_id": package, "purchase_id": purchase })
}

async fn purchase_then_signed_completion_credits_exactly_once(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Buyer", 0).await;
    let started = app.purchase(&key, "credits_basic").await;
    let session = started["checkoutSessionId"].as_str().unwrap().to_owned();
    let purchase = started["purchase"].clone();
    let purchase_id = purchase["id"].as_str().unwrap().to_owned();
    assert!(purchase_id.starts_with("pur_"));
    assert_eq!(started["checkoutUrl"], format!("https://checkout.stripe.com/c/pay/{session}"));
    assert_eq!(purchase["status"], "PENDING");
    assert_eq!(
        (purchase["credits"].clone(), purchase["amount"].clone(), purchase["currency"].clone()),
        (json!(55000), json!(3999), json!("usd"))
    );

    // What async-stripe sent, in Stripe's form encoding.
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.headers["authorization"], format!("Bearer {STRIPE_KEY}"));
    assert!(call.headers.get("idempotency-key").is_some_and(|k| k.to_str().unwrap().contains(&purchase_id)));
    for (field, value) in [
        ("mode", "payment"),
        ("client_reference_id", org.as_str()),
        ("metadata[organization_id]", org.as_str()),
        ("metadata[package_id]", "credits_basic"),
        ("metadata[purchase_id]", purchase_id.as_str()),
        ("success_url", "https://app.example/billing/success"),
        ("cancel_url", "https://app.example/billing/cancel"),
        ("line_items[0][quantity]", "1"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", "3999"),
        ("line_items[0][price_data][product_data][name]", "Basic credits"),
    ] {
        assert_eq!(call.field(field), Some(value), "{field} in {:?}", call.form);
    }
    assert_eq!(app.purchase_status(&key, &purchase_id).await, "PENDING");

    // The signed completion credits package credits plus bonus.
    let completed = event(
        "evt_completed_1",
        "checkout.session.completed",
        paid_session(&session, &metadata(&org, "credits_basic", &purchase_id), 3999, "usd", "pi_basic_1"),
    );
    // Delivered five times at once from the start: credited exactly once.
    let statuses = join_all((0..5).map(|_| app.webhook(&completed))).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert_eq!(app.balance(&key).await, 55_000);
    assert_eq!(app.purchase_status(&key, &purchase_id).await, "PAID");
    // Redelivered later, and a second event for the same session.
    assert_eq!(app.webhook(&completed).await, 200);
    let again = event(
        "evt_async_1",
        "checkout.session.async_payment_succeeded",
        paid_session(&session, &metadata(&org, "credits_basic", &purchase_id), 3999, "usd", "pi_basic_1"),
    );
    assert_eq!(app.webhook(&again).await, 200);
    assert_eq!(app.balance(&key).await, 55_000);
    let data = app.ok(Some(&key), "{ creditTransactions(filter: { kinds: [PURCHASE] }) { totalCount edges { node { amount referenceType referenceId description } } } }", json!({})).await;
    let purchases = &data["creditTransactions"];
    assert_eq!(purchases["totalCount"], 1);
    assert_eq!(purchases["edges"][0]["node"]["amount"], 55000);
    assert_eq!(purchases["edges"][0]["node"]["referenceType"], "credit_purchase");
    assert_eq!(purchases["edges"][0]["node"]["referenceId"], purchase_id.as_str());

    // Many concurrent deliveries of distinct events for one fresh session credit once.
    let second = app.purchase(&key, "credits_starter").await;
    let (session2, purchase2) = (
        second["checkoutSessionId"].as_str().unwrap().to_owned(),
        second["purchase"]["id"].as_str().unwrap().to_owned(),
    );
    let object = paid_session(&session2, &metadata(&org, "credits_starter", &purchase2), 999, "usd", "pi_starter_1");
    let storm = join_all((0..6).map(|i| {
        let kind = if i % 2 == 0 { "checkout.session.completed" } else { "checkout.session.async_payment_succeeded" };
        let payload = event(&format!("evt_storm_{i}"), kind, object.clone());
        let app = &app;
        async move { app.webhook(&payload).await }
    }))
    .await;
    assert!(storm.iter().all(|status| *status == 200), "{storm:?}");
    assert_eq!(app.balance(&key).await, 65_000);
    assert_eq!(app.transaction_sum(&key).await, (65_000, 2));

    // Other event types are acknowledged and ignored.
    let other = event("evt_other", "customer.created", json!({ "id": "cus_1", "object": "customer" }));
    assert_eq!(app.webhook(&other).await, 200);
    // The admin can buy on behalf of an organization; unknown packages are NOT_FOUND.
    let vars = json!({ "org": org });
    let by_admin = app.ok(Some(ADMIN_TOKEN), "mutation($org: ID) { purchasePackage(input: { organizationId: $org, packageId: \"credits_starter\" }) { purchase { organizationId } } }", vars).await;
    assert_eq!(by_admin["purchasePackage"]["purchase"]["organizationId"], org.as_str());
    app.fails(Some(&key), PURCHASE, json!({ "package": "credits_platinum" }), "NOT_FOUND").await;
}

async fn async_payments_and_closed_sessions_follow_stripe(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Async", 0).await;
    // Completed but unpaid (a bank debit in flight): nothing yet; then it succeeds.
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    let mut unpaid = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_async_1");
    unpaid["payment_status"] = json!("unpaid");
    assert_eq!(app.webhook(&event("evt_a1", "checkout.session.completed", unpaid)).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PENDING");
    let succeeded = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_async_1");
    assert_eq!(app.webhook(&event("evt_a2", "checkout.session.async_payment_succeeded", succeeded.clone())).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
    // A late expiry or failure never takes a paid purchase back.
    assert_eq!(app.webhook(&event("evt_a3", "checkout.session.expired", succeeded)).await, 200);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");

    let (session, purchase) = app.start_purchase(&key, "credits_basic").await;
    let failed = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 3999, "usd", "pi_async_2");
    assert_eq!(app.webhook(&event("evt_f1", "checkout.session.async_payment_failed", failed)).await, 200);
    assert_eq!(app.purchase_status(&key, &purchase).await, "FAILED");

    let (session, purchase) = app.start_purchase(&key, "credits_basic").await;
    let expired = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 3999, "usd", "pi_async_3");
    assert_eq!(app.webhook(&event("evt_e1", "checkout.session.expired", expired.clone())).await, 200);
    assert_eq!(app.purchase_status(&key, &purchase).await, "EXPIRED");
    assert_eq!(app.balance(&key).await, 10_000);
    // Delivered out of order: the payment's event after the expiry's. Money was taken,
    // so the credits are added.
    assert_eq!(app.webhook(&event("evt_e2", "checkout.session.completed", expired)).await, 200);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
    assert_eq!(app.balance(&key).await, 65_000);
}

async fn refunds_take_back_the_refunded_share_never_below_zero(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Refunds", 0).await;

    // Full refund after spending 8,000 of 10,000: only the 2,000 left are taken.
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    let paid = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_refund_1");
    assert_eq!(app.webhook(&event("evt_r1", "checkout.session.completed", paid)).await, 200);
    app.ok(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 8000, description: \"spent\" }) { replayed } }",
        json!({}),
    )
    .await;
    assert_eq!(app.webhook(&event("evt_r2", "charge.refunded", refunded_charge("pi_refund_1", 999, 999))).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED");
    let data = app
        .ok(
            Some(&key),
            "{ creditTransactions(filter: { kinds: [REFUND] }) { edges { node { amount description referenceId } } } }",
            json!({}),
        )
        .await;
    let refund = &data["creditTransactions"]["edges"][0]["node"];
    assert_eq!(refund["amount"], -2000);
    assert_eq!(refund["referenceId"], purchase.as_str());
    assert!(refund["description"].as_str().unwrap().contains("8000 credits were already spent"), "{refund}");
    // Redelivery changes nothing.
    assert_eq!(app.webhook(&event("evt_r2", "charge.refunded", refunded_charge("pi_refund_1", 999, 999))).await, 200);
    assert_eq!(app.transaction_sum(&key).await, (0, 3));

    // Partial refunds are cumulative; a stale one arriving late takes nothing more.
    let (session, purchase) = app.start_purchase(&key, "credits_basic").await;
    let paid = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 3999, "usd", "pi_refund_2");
    assert_eq!(app.webhook(&event("evt_p1", "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.balance(&key).await, 55_000);
    assert_eq!(app.webhook(&event("evt_p2", "charge.refunded", refunded_charge("pi_refund_2", 3999, 2000))).await, 200);
    let half = 55_000 - 55_000 * 2000 / 3999;
    assert_eq!(app.balance(&key).await, half);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PARTIALLY_REFUNDED");
    assert_eq!(app.webhook(&event("evt_p3", "charge.refunded", refunded_charge("pi_refund_2", 3999, 3999))).await, 200);
    assert_eq!(app.webhook(&event("evt_p4", "charge.refunded", refunded_charge("pi_refund_2", 3999, 1000))).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED");

    // A refund reported before the payment is applied when the payment arrives.
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    assert_eq!(app.webhook(&event("evt_o1", "charge.refunded", refunded_charge("pi_refund_3", 999, 999))).await, 200);
    let paid = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_refund_3");
    assert_eq!(app.webhook(&event("evt_o2", "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED");
    let (sum, _) = app.transaction_sum(&key).await;
    assert_eq!(sum, 0, "balance = sum of transactions");
}

async fn mismatched_or_unknown_sessions_credit_nothing(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else {
        return;
    };
    let (org, key) = app.funded_org("Mismatch", 0).await;
    let (session, purchase) = app.start_purchase(&key, "credits_basic").await;
    // Paid, but 1 cent instead of the package price: no credits, FAILED, still 2xx.
    let cheap = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 1, "usd", "pi_cheap");
    assert_eq!(app.webhook(&event("evt_m1", "checkout.session.completed", cheap)).await, 200);
    assert_eq!(app.purchase_status(&key, &purchase).await, "FAILED");
    let euros = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 3999, "eur", "pi_euro");
    assert_eq!(app.webhook(&event("evt_m2", "checkout.session.completed", euros)).await, 200);
    assert_eq!(app.balance(&key).await, 0);

    // A paid session whose local record was lost is recreated from its metadata.
    let lost = paid_session("cs_test_lost", &metadata(&org, "credits_starter", "pur_lost_1"), 999, "usd", "pi_lost");
    assert_eq!(app.webhook(&event("evt_m3", "checkout.session.completed", lost)).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
    assert_eq!(app.purchase_status(&key, "pur_lost_1").await, "PAID");
    // Sessions that are not ours are acknowledged and ignored.
    let foreign = paid_session("cs_test_foreign", &json!({}), 500, "usd", "pi_foreign");
    assert_eq!(app.webhook(&event("evt_m4", "checkout.session.completed", foreign)).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
}

#[tokio::test]
async fn forged_stale_and_missing_signatures_are_refused() {
    let Some((app, _fake)) = stripe_app(Engine::Sqlite).await else {
        return;
    };
    let (org, key) = app.funded_org("Forged", 0).await;
    let object =
        paid_session("cs_test_forged", &metadata(&org, "credits_basic", "pur_forged"), 3999, "usd", "pi_forged");
    let body = event("evt_forged", "checkout.session.completed", object).to_string();
    let now = chrono::Utc::now().timestamp();
    let forged = credits::billing::webhook::sign(body.as_bytes(), "whsec_not_ours", now);
    assert_eq!(app.raw_webhook(body.clone(), Some(forged)).await, 400);
    let stale = credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, now - 301);
    assert_eq!(app.raw_webhook(body.clone(), Some(stale)).await, 400);
    assert_eq!(app.raw_webhook(body.clone(), None).await, 400);
    assert_eq!(app.raw_webhook(body.clone(), Some("t=1,v1=zz".into())).await, 400);
    let tampered = body.replace("3999", "3998");
    let signed_original = credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, now);
    assert_eq!(app.raw_webhook(tampered, Some(signed_original)).await, 400);
    let garbage = "not json";
    let signed_garbage = credits::billing::webhook::sign(garbage.as_bytes(), WEBHOOK_SECRET, now);
    assert_eq!(app.raw_webhook(garbage.into(), Some(signed_garbage)).await, 400);
    assert_eq!(app.balance(&key).await, 0);
}

#[tokio::test]
async fn stripe_failures_are_payment_provider_errors() {
    let Some((app, fake)) = stripe_app(Engine::Sqlite).await else {
        return;
    };
    let (_, key) = app.funded_org("Down", 0).await;
    fake.set(Behaviour::Fail);
    let error = app.fails(Some(&key), PURCHASE, json!({ "package": "credits_basic" }), "PAYMENT_PROVIDER_ERROR").await;
    assert!(!error.to_string().contains(STRIPE_KEY));
    fake.set(Behaviour::Hang);
    let started = std::time::Instant::now();
    let error = app.fails(Some(&key), PURCHASE, json!({ "package": "credits_basic" }), "PAYMENT_PROVIDER_ERROR").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the Stripe time-out applies");
    assert!(!error.to_string().contains(STRIPE_KEY));
    let data = app.ok(Some(&key), "{ creditPurchases { totalCount } }", json!({})).await;
    assert_eq!(data["creditPurchases"]["totalCount"], 0, "no purchase is recorded for a failed Checkout");
    fake.set(Behaviour::Normal);
    // Return URLs: given by the input when the server has none.
    app.purchase(&key, "credits_basic").await;
}

#[tokio::test]
async fn without_stripe_configuration_purchases_and_webhooks_say_so() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, key) = app.funded_org("Unconfigured", 0).await;
    app.fails(Some(&key), PURCHASE, json!({ "package": "credits_basic" }), "PAYMENT_PROVIDER_NOT_CONFIGURED").await;
    assert_eq!(app.raw_webhook("{}".into(), Some("t=1,v1=00".into())).await, 503);
}

#[tokio::test]
async fn return_urls_come_from_the_input_or_config_and_price_ids_are_used() {
    let fake = FakeStripe::start().await;
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages.toml");
    std::fs::write(&packages, "[[package]]\nid = \"gold\"\nname = \"Gold\"\ncredits = 100\nprice_amount = 500\nstripe_price_id = \"price_gold123\"\n").unwrap();
    let config = [
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", fake.base.as_str()),
        ("CREDITS_PACKAGES", packages.to_str().unwrap()),
    ];
    let Some(app) = spawn_app_with(Engine::Sqlite, &config).await else {
        return;
    };
    let (_, key) = app.funded_org("Urls", 0).await;
    app.fails(Some(&key), PURCHASE, json!({ "package": "gold" }), "BAD_USER_INPUT").await;
    app.fails(
        Some(&key),
        PURCHASE,
        json!({ "package": "gold", "success": "javascript:alert(1)", "cancel": "https://a.example/c" }),
        "BAD_USER_INPUT",
    )
    .await;
    let vars = json!({ "package": "gold", "success": "https://a.example/s", "cancel": "https://a.example/c" });
    app.ok(Some(&key), PURCHASE, vars).await;
    let calls = fake.calls();
    let call = calls.last().unwrap();
    assert_eq!(call.field("line_items[0][price]"), Some("price_gold123"));
    assert_eq!(call.field("line_items[0][price_data][unit_amount]"), None);
    assert_eq!(call.field("success_url"), Some("https://a.example/s"));
    let packages = app.ok(None, "{ creditPackages { id totalCredits } }", json!({})).await;
    assert_eq!(packages["creditPackages"], json!([{ "id": "gold", "totalCredits": 100 }]));
}

#[tokio::test]
async fn a_failing_handler_answers_500_and_applies_nothing() {
    let Some((app, _fake)) = stripe_app(Engine::Sqlite).await else { return };
    let (org, key) = app.funded_org("Full", 0).await;
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    // A balance so close to the limit that the purchase's credits cannot be added.
    app.grant(&org, 9_007_199_254_740_991 - 5_000).await;
    let paid = event(
        "evt_full",
        "checkout.session.completed",
        paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_full"),
    );
    assert_eq!(app.webhook(&paid).await, 500);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PENDING", "nothing applied");
    // The event was not recorded, so Stripe's retry is tried afresh (and fails the same way).
    assert_eq!(app.webhook(&paid).await, 500);
    assert_eq!(app.balance(&key).await, 9_007_199_254_740_991 - 5_000);
}

async fn a_refund_racing_its_payment_is_never_lost(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Race", 0).await;
    let mut pairs = Vec::new();
    for i in 0..30 {
        let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
        let intent = format!("pi_race_{i}");
        let paid = event(
            &format!("evt_rp_{i}"),
            "checkout.session.completed",
            paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", &intent),
        );
        let refunded = event(&format!("evt_rr_{i}"), "charge.refunded", refunded_charge(&intent, 999, 999));
        pairs.push((purchase, paid, refunded));
    }
    // Each payment and its full refund arrive at the same moment.
    let statuses =
        join_all(pairs.iter().flat_map(|(_, paid, refunded)| [app.webhook(paid), app.webhook(refunded)])).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    for (purchase, _, _) in &pairs {
        assert_eq!(app.purchase_status(&key, purchase).await, "REFUNDED");
    }
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.transaction_sum(&key).await, (0, 60));
}

#[tokio::test]
async fn oversized_webhook_bodies_are_refused() {
    let Some((app, _fake)) = stripe_app(Engine::Sqlite).await else { return };
    let body = format!("{{\"id\":\"evt_big\",\"pad\":\"{}\"}}", "x".repeat(600 * 1024));
    let signature = credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    assert_eq!(app.raw_webhook(body, Some(signature)).await, 413);
}
