//! Buying credit packages: Checkout through a fake Stripe, credits by signed webhooks.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::fake_stripe::{Behaviour, FakeStripe, dispute, event, paid_session, refunded_charge};
use crate::helpers::{ADMIN_TOKEN, Engine, TestApp, permutations, spawn_app, spawn_app_with};
use crate::on_both_engines;

/// The secret `stripe_app` signs Stripe's webhooks with.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_test_secret";
const STRIPE_KEY: &str = "sk_test_fake_key_123";
const PURCHASE: &str = "mutation($package: ID!, $success: String, $cancel: String) { purchasePackage(input: { packageId: $package, successUrl: $success, cancelUrl: $cancel }) { checkoutSessionId checkoutUrl purchase { id organizationId packageId status credits amount currency checkoutSessionId createdAt updatedAt } } }";

on_both_engines!(
    purchase_then_signed_completion_credits_exactly_once,
    a_refund_racing_its_payment_is_never_lost,
    async_payments_and_closed_sessions_follow_stripe,
    refunds_take_back_the_refunded_share_never_below_zero,
    mismatched_or_unknown_sessions_credit_nothing,
    connect_and_other_mode_events_are_ignored,
    malformed_or_out_of_range_timestamps_are_refused_and_the_server_still_answers,
    a_session_with_only_a_client_reference_credits_nothing,
    orphan_sessions_are_recorded_failed_and_credit_nothing,
    a_dispute_withdrawn_then_reinstated_nets_to_nothing,
    a_dispute_reinstated_before_its_withdrawal_never_takes,
    a_dispute_before_its_payment_is_applied_when_the_payment_arrives,
    a_dispute_after_a_partial_refund_takes_only_what_is_left,
    a_dispute_after_spending_never_goes_below_zero_and_gives_back_what_it_took,
    disputes_racing_their_payment_settle_the_same_in_any_order,
    refunds_and_disputes_end_the_same_in_every_order_of_delivery,
    a_full_refund_between_a_dispute_and_its_reinstatement_keeps_the_credits_taken,
);

pub(crate) async fn stripe_app(engine: Engine) -> Option<(TestApp, FakeStripe)> {
    stripe_app_with_key(engine, Some(STRIPE_KEY)).await
}

/// An app with the webhook configured and `key` (or no key at all) as Stripe secret key.
async fn stripe_app_with_key(engine: Engine, key: Option<&str>) -> Option<(TestApp, FakeStripe)> {
    let fake = FakeStripe::start().await;
    let mut config = vec![("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)];
    if let Some(key) = key {
        config.push(("STRIPE_SECRET_KEY", key));
    }
    let app = spawn_app_with(
        engine,
        &[
            config.as_slice(),
            &[
                ("STRIPE_API_BASE", fake.base.as_str()),
                ("CREDITS_STRIPE_TIMEOUT_MS", "1000"),
                ("CREDITS_CHECKOUT_SUCCESS_URL", "https://app.example/billing/success"),
                ("CREDITS_CHECKOUT_CANCEL_URL", "https://app.example/billing/cancel"),
            ],
        ]
        .concat(),
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

pub(crate) fn metadata(org: &str, package: &str, purchase: &str) -> Value {
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
    // `{PURCHASE_ID}` becomes the new purchase's id; Stripe's own placeholder is left alone.
    let vars = json!({
        "package": "gold",
        "success": "https://a.example/s?purchase={PURCHASE_ID}&session={CHECKOUT_SESSION_ID}",
        "cancel": "https://a.example/c?purchase={PURCHASE_ID}",
    });
    let purchase = app.ok(Some(&key), PURCHASE, vars).await["purchasePackage"]["purchase"]["id"].clone();
    let purchase = purchase.as_str().unwrap();
    let calls = fake.calls();
    let call = calls.last().unwrap();
    let expected = format!("https://a.example/s?purchase={purchase}&session={{CHECKOUT_SESSION_ID}}");
    assert_eq!(call.field("success_url"), Some(expected.as_str()));
    assert_eq!(call.field("cancel_url"), Some(format!("https://a.example/c?purchase={purchase}").as_str()));
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

// --- Stripe, hardened -------------------------------------------------------------------

impl TestApp {
    /// Starts a purchase of `package` and delivers its paid completion through
    /// `payment_intent`; returns the purchase id.
    pub(crate) async fn paid_purchase(&self, key: &str, org: &str, package: &str, payment_intent: &str) -> String {
        let (session, purchase) = self.start_purchase(key, package).await;
        let amount = if package == "credits_basic" { 3999 } else { 999 };
        let paid = paid_session(&session, &metadata(org, package, &purchase), amount, "usd", payment_intent);
        assert_eq!(
            self.webhook(&event(&format!("evt_paid_{purchase}"), "checkout.session.completed", paid)).await,
            200
        );
        purchase
    }

    /// Delivers a dispute event (`funds_withdrawn` or `funds_reinstated`) under `event_id`.
    pub(crate) async fn dispute_event(
        &self,
        event_id: &str,
        kind: &str,
        dispute_id: &str,
        payment_intent: &str,
        amount: i64,
    ) {
        let object = dispute(dispute_id, payment_intent, amount);
        let status = self.webhook(&event(event_id, &format!("charge.dispute.{kind}"), object)).await;
        assert_eq!(status, 200, "{kind} {dispute_id}");
    }

    /// The organization's `REFUND` and `ADJUSTMENT` transactions, oldest first, as
    /// (kind, amount, description).
    pub(crate) async fn corrections(&self, key: &str) -> Vec<(String, i64, String)> {
        let data = self
            .ok(
                Some(key),
                "{ creditTransactions(first: 100, filter: { kinds: [REFUND, ADJUSTMENT] }) { edges { node { kind amount description } } } }",
                json!({}),
            )
            .await;
        let mut rows: Vec<_> = data["creditTransactions"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|edge| {
                let node = &edge["node"];
                (
                    node["kind"].as_str().unwrap_or_default().to_owned(),
                    node["amount"].as_i64().unwrap_or_default(),
                    node["description"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        rows.reverse();
        rows
    }

    /// Every orphan session recorded in the database.
    async fn orphans(&self) -> Vec<entity::stripe_orphan_session::Model> {
        use sea_orm::EntityTrait;
        let db = sea_orm::Database::connect(self.database_url()).await.expect("connect");
        let rows = entity::stripe_orphan_session::Entity::find().all(&db).await.expect("orphans");
        db.close().await.ok();
        rows
    }
}

async fn connect_and_other_mode_events_are_ignored(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Modes", 0).await;
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    let object = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_modes");
    // A connected account's event (Stripe Connect): answered 2xx, ignored.
    let mut connect = event("evt_connect", "checkout.session.completed", object.clone());
    connect["account"] = json!("acct_1Connected");
    assert_eq!(app.webhook(&connect).await, 200);
    // A live-mode event while our key is a test key: answered 2xx, ignored.
    let mut live = event("evt_live", "checkout.session.completed", object.clone());
    live["livemode"] = json!(true);
    assert_eq!(app.webhook(&live).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PENDING");
    // Our own account's event of our mode is applied.
    assert_eq!(app.webhook(&event("evt_ours", "checkout.session.completed", object)).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
    // A live dispute cannot take anything back from a test-mode purchase either.
    let mut live_dispute = event("evt_live_dp", "charge.dispute.funds_withdrawn", dispute("dp_live", "pi_modes", 999));
    live_dispute["livemode"] = json!(true);
    assert_eq!(app.webhook(&live_dispute).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);

    // With a live key, test-mode events are the other mode.
    let Some((live_app, _fake)) = stripe_app_with_key(engine, Some("sk_live_fake_key_456")).await else { return };
    let (org, key) = live_app.funded_org("Live", 0).await;
    let lost = paid_session("cs_live_lost", &metadata(&org, "credits_starter", "pur_live_1"), 999, "usd", "pi_live");
    assert_eq!(live_app.webhook(&event("evt_test_mode", "checkout.session.completed", lost.clone())).await, 200);
    assert_eq!(live_app.balance(&key).await, 0);
    let mut live = event("evt_live_mode", "checkout.session.completed", lost);
    live["livemode"] = json!(true);
    assert_eq!(live_app.webhook(&live).await, 200);
    assert_eq!(live_app.balance(&key).await, 10_000);

    // Without a secret key the server counts as test mode.
    let Some((keyless, _fake)) = stripe_app_with_key(engine, None).await else { return };
    let (org, key) = keyless.funded_org("Keyless", 0).await;
    let lost = paid_session("cs_keyless", &metadata(&org, "credits_starter", "pur_keyless_1"), 999, "usd", "pi_kl");
    let mut live = event("evt_keyless_live", "checkout.session.completed", lost.clone());
    live["livemode"] = json!(true);
    assert_eq!(keyless.webhook(&live).await, 200);
    assert_eq!(keyless.balance(&key).await, 0);
    assert_eq!(keyless.webhook(&event("evt_keyless_test", "checkout.session.completed", lost)).await, 200);
    assert_eq!(keyless.balance(&key).await, 10_000);
}

async fn malformed_or_out_of_range_timestamps_are_refused_and_the_server_still_answers(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Clock", 0).await;
    let lost = paid_session("cs_clock", &metadata(&org, "credits_starter", "pur_clock_1"), 999, "usd", "pi_clock");
    let body = event("evt_clock", "checkout.session.completed", lost).to_string();
    let now = chrono::Utc::now().timestamp();
    let good = credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, now);
    let v1 = good.split_once("v1=").map(|(_, v1)| v1.to_owned()).expect("v1");
    for t in ["99999999999999999999", "-9223372036854775808", "abc", "", "-1", "0", "1e9", "9223372036854775807"] {
        assert_eq!(app.raw_webhook(body.clone(), Some(format!("t={t},v1={v1}"))).await, 400, "t={t}");
    }
    // Correctly signed, but with timestamps at the ends of the range.
    for t in [i64::MIN, i64::MAX, 1] {
        let signed = credits::billing::webhook::sign(body.as_bytes(), WEBHOOK_SECRET, t);
        assert_eq!(app.raw_webhook(body.clone(), Some(signed)).await, 400, "t={t}");
    }
    assert_eq!(app.balance(&key).await, 0);
    // The server is still up and applies a well-signed delivery of the same body.
    assert_eq!(app.raw_webhook(body, Some(good)).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
}

async fn a_session_with_only_a_client_reference_credits_nothing(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Reference", 0).await;
    // Like a Payment Link on which the buyer put our organization id: no local purchase,
    // no metadata ids.
    let mut link = paid_session("cs_test_payment_link", &json!({}), 999, "usd", "pi_link");
    link["client_reference_id"] = json!(org);
    assert_eq!(app.webhook(&event("evt_link", "checkout.session.completed", link)).await, 200);
    // Two of the three metadata ids are not enough either.
    let partial = json!({ "organization_id": org, "package_id": "credits_starter" });
    let two_ids = paid_session("cs_test_two_ids", &partial, 999, "usd", "pi_two_ids");
    assert_eq!(app.webhook(&event("evt_two_ids", "checkout.session.completed", two_ids)).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.transaction_sum(&key).await, (0, 0));
    let data = app.ok(Some(&key), "{ creditPurchases { totalCount } }", json!({})).await;
    assert_eq!(data["creditPurchases"]["totalCount"], 0);
    let orphans = app.orphans().await;
    let ids: Vec<_> = orphans.iter().map(|orphan| orphan.checkout_session_id.as_str()).collect();
    assert!(ids.contains(&"cs_test_payment_link") && ids.contains(&"cs_test_two_ids"), "{orphans:?}");
}

async fn orphan_sessions_are_recorded_failed_and_credit_nothing(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Bystander", 0).await;
    // An organization that does not exist (deleted, or another deployment's).
    let unknown_org = metadata("org_does_not_exist", "credits_starter", "pur_orphan_1");
    let paid = paid_session("cs_test_orphan", &unknown_org, 999, "usd", "pi_orphan");
    assert_eq!(app.webhook(&event("evt_orphan_1", "checkout.session.completed", paid.clone())).await, 200);
    // Redelivered, and reported again by another event: still one orphan.
    assert_eq!(app.webhook(&event("evt_orphan_1", "checkout.session.completed", paid.clone())).await, 200);
    assert_eq!(app.webhook(&event("evt_orphan_2", "checkout.session.async_payment_succeeded", paid)).await, 200);
    // A package that is not (or no longer) on sale.
    let unknown_package = metadata(&org, "credits_platinum", "pur_orphan_2");
    let paid = paid_session("cs_test_orphan_pkg", &unknown_package, 999, "usd", "pi_orphan_pkg");
    assert_eq!(app.webhook(&event("evt_orphan_3", "checkout.session.completed", paid)).await, 200);

    let orphans = app.orphans().await;
    assert_eq!(orphans.len(), 2, "{orphans:?}");
    let orphan = orphans.iter().find(|o| o.checkout_session_id == "cs_test_orphan").expect("orphan recorded");
    assert_eq!(orphan.status, "FAILED");
    assert_eq!((orphan.amount, orphan.currency.as_deref()), (Some(999), Some("usd")));
    assert_eq!(orphan.payment_intent_id.as_deref(), Some("pi_orphan"));
    assert!(orphan.reason.contains("org_does_not_exist"), "{}", orphan.reason);
    let stored: Value = serde_json::from_str(&orphan.metadata).expect("metadata JSON");
    assert_eq!(stored, unknown_org);
    let by_package = orphans.iter().find(|o| o.checkout_session_id == "cs_test_orphan_pkg").expect("orphan");
    assert_eq!(by_package.status, "FAILED");
    // No credits anywhere: not for the bystander, and no purchase was made up.
    assert_eq!(app.balance(&key).await, 0);
    let data = app.ok(Some(&key), "{ creditPurchases { totalCount } }", json!({})).await;
    assert_eq!(data["creditPurchases"]["totalCount"], 0);
}

async fn a_dispute_withdrawn_then_reinstated_nets_to_nothing(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Disputed", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_starter", "pi_dispute_1").await;
    assert_eq!(app.balance(&key).await, 10_000);

    // A dispute of 500 of the 999 paid: its share of the credits, as a REFUND.
    app.dispute_event("evt_dw_1", "funds_withdrawn", "dp_one", "pi_dispute_1", 500).await;
    let share = 10_000 * 500 / 999;
    assert_eq!(app.balance(&key).await, 10_000 - share);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
    let corrections = app.corrections(&key).await;
    assert_eq!(corrections.len(), 1);
    assert_eq!((corrections[0].0.as_str(), corrections[0].1), ("REFUND", -share));
    assert!(corrections[0].2.contains("dp_one"), "{corrections:?}");

    // Redelivered, concurrently, and under another event id: taken once.
    let again = event("evt_dw_1", "charge.dispute.funds_withdrawn", dispute("dp_one", "pi_dispute_1", 500));
    let statuses = join_all((0..4).map(|_| app.webhook(&again))).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    app.dispute_event("evt_dw_1b", "funds_withdrawn", "dp_one", "pi_dispute_1", 500).await;
    assert_eq!(app.balance(&key).await, 10_000 - share);

    // Won: exactly what it took comes back, as an ADJUSTMENT, and the status is restored.
    app.dispute_event("evt_dr_1", "funds_reinstated", "dp_one", "pi_dispute_1", 500).await;
    assert_eq!(app.balance(&key).await, 10_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
    let corrections = app.corrections(&key).await;
    assert_eq!(corrections.len(), 2);
    assert_eq!((corrections[1].0.as_str(), corrections[1].1), ("ADJUSTMENT", share));
    assert!(corrections[1].2.contains("dp_one"), "{corrections:?}");

    // Every later delivery of either, under any event id, changes nothing.
    app.dispute_event("evt_dr_1", "funds_reinstated", "dp_one", "pi_dispute_1", 500).await;
    app.dispute_event("evt_dr_1b", "funds_reinstated", "dp_one", "pi_dispute_1", 500).await;
    app.dispute_event("evt_dw_1c", "funds_withdrawn", "dp_one", "pi_dispute_1", 500).await;
    assert_eq!(app.balance(&key).await, 10_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
    assert_eq!(app.transaction_sum(&key).await, (10_000, 3));

    // A second dispute on the same payment is its own: taken, and lost (never reinstated).
    app.dispute_event("evt_dw_2", "funds_withdrawn", "dp_two", "pi_dispute_1", 999).await;
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
}

async fn a_dispute_reinstated_before_its_withdrawal_never_takes(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Reordered", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_starter", "pi_reorder").await;
    app.dispute_event("evt_rr_1", "funds_reinstated", "dp_reorder", "pi_reorder", 999).await;
    assert_eq!(app.balance(&key).await, 10_000);
    app.dispute_event("evt_rw_1", "funds_withdrawn", "dp_reorder", "pi_reorder", 999).await;
    app.dispute_event("evt_rw_1", "funds_withdrawn", "dp_reorder", "pi_reorder", 999).await;
    app.dispute_event("evt_rr_2", "funds_reinstated", "dp_reorder", "pi_reorder", 999).await;
    assert_eq!(app.balance(&key).await, 10_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
    assert_eq!(app.transaction_sum(&key).await, (10_000, 1), "no net change, and no entries either");

    // Both before the payment: the payment then credits in full, and nothing is taken.
    let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
    app.dispute_event("evt_rr_3", "funds_reinstated", "dp_early", "pi_reorder_2", 999).await;
    app.dispute_event("evt_rw_3", "funds_withdrawn", "dp_early", "pi_reorder_2", 999).await;
    let paid = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", "pi_reorder_2");
    assert_eq!(app.webhook(&event("evt_rp_3", "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.balance(&key).await, 20_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
}

async fn a_dispute_before_its_payment_is_applied_when_the_payment_arrives(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Early", 0).await;
    let (session, purchase) = app.start_purchase(&key, "credits_basic").await;
    app.dispute_event("evt_ew_1", "funds_withdrawn", "dp_early_w", "pi_early", 3999).await;
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PENDING");
    let paid = paid_session(&session, &metadata(&org, "credits_basic", &purchase), 3999, "usd", "pi_early");
    assert_eq!(app.webhook(&event("evt_ep_1", "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
    assert_eq!(app.transaction_sum(&key).await, (0, 2));
    // Reinstated later: everything comes back.
    app.dispute_event("evt_er_1", "funds_reinstated", "dp_early_w", "pi_early", 3999).await;
    assert_eq!(app.balance(&key).await, 55_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
}

async fn a_dispute_after_a_partial_refund_takes_only_what_is_left(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Capped", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_basic", "pi_capped").await;
    assert_eq!(app.webhook(&event("evt_cr_1", "charge.refunded", refunded_charge("pi_capped", 3999, 2000))).await, 200);
    let refunded = 55_000 * 2000 / 3999;
    assert_eq!(app.balance(&key).await, 55_000 - refunded);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PARTIALLY_REFUNDED");
    // A dispute of the whole amount: only the credits the refund left are taken.
    app.dispute_event("evt_cw_1", "funds_withdrawn", "dp_capped", "pi_capped", 3999).await;
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
    let corrections = app.corrections(&key).await;
    let taken: i64 = corrections.iter().map(|(_, amount, _)| -amount).sum();
    assert_eq!(taken, 55_000, "refund and dispute never take more than the purchase gave: {corrections:?}");
    // Credits granted meanwhile are not the purchase's: a later refund report takes nothing more.
    app.grant(&org, 1_000).await;
    assert_eq!(app.webhook(&event("evt_cr_2", "charge.refunded", refunded_charge("pi_capped", 3999, 3999))).await, 200);
    assert_eq!(app.balance(&key).await, 1_000);
    // v3: refunded in full comes before disputed.
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED");
    app.dispute_event("evt_cw_2", "funds_withdrawn", "dp_capped_again", "pi_capped", 3999).await;
    assert_eq!(app.balance(&key).await, 1_000);
    let (sum, _) = app.transaction_sum(&key).await;
    assert_eq!(sum, 1_000, "balance = sum of transactions");
}

async fn a_dispute_after_spending_never_goes_below_zero_and_gives_back_what_it_took(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Spent", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_starter", "pi_spent").await;
    app.ok(
        Some(&key),
        "mutation { consumeCredits(input: { amount: 8000, description: \"spent\" }) { replayed } }",
        json!({}),
    )
    .await;
    app.dispute_event("evt_sw_1", "funds_withdrawn", "dp_spent", "pi_spent", 999).await;
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
    let corrections = app.corrections(&key).await;
    assert_eq!(corrections[0].1, -2000);
    assert!(corrections[0].2.contains("dp_spent") && corrections[0].2.contains("8000 credits were already spent"));
    // Reinstated: exactly the 2,000 it took come back, not the 10,000 it wanted.
    app.dispute_event("evt_sr_1", "funds_reinstated", "dp_spent", "pi_spent", 999).await;
    assert_eq!(app.balance(&key).await, 2_000);
    assert_eq!(app.purchase_status(&key, &purchase).await, "PAID");
    assert_eq!(app.transaction_sum(&key).await, (2_000, 4));
}

async fn disputes_racing_their_payment_settle_the_same_in_any_order(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("DisputeRace", 0).await;
    let mut purchases = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..12 {
        let (session, purchase) = app.start_purchase(&key, "credits_starter").await;
        let intent = format!("pi_drace_{i}");
        let paid = paid_session(&session, &metadata(&org, "credits_starter", &purchase), 999, "usd", &intent);
        let withdrawn = dispute(&format!("dp_race_{i}"), &intent, 999);
        deliveries.push(event(&format!("evt_drp_{i}"), "checkout.session.completed", paid));
        deliveries.push(event(&format!("evt_drw_{i}"), "charge.dispute.funds_withdrawn", withdrawn.clone()));
        deliveries.push(event(&format!("evt_drw_{i}"), "charge.dispute.funds_withdrawn", withdrawn.clone()));
        deliveries.push(event(&format!("evt_drr_{i}"), "charge.dispute.funds_reinstated", withdrawn));
        purchases.push(purchase);
    }
    // Rotate each purchase's events differently, then deliver everything at once.
    for (i, chunk) in deliveries.chunks_mut(4).enumerate() {
        chunk.rotate_left(i % 4);
    }
    let statuses = join_all(deliveries.iter().map(|delivery| app.webhook(delivery))).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    for purchase in &purchases {
        assert_eq!(app.purchase_status(&key, purchase).await, "PAID");
    }
    assert_eq!(app.balance(&key).await, 120_000);
    let (sum, _) = app.transaction_sum(&key).await;
    assert_eq!(sum, 120_000, "balance = sum of transactions");
}

// --- Refunds and disputes commute (v3) ----------------------------------------------------

/// One delivery of a commuting set, before it is addressed to one order's payment.
#[derive(Clone, Copy, Debug)]
enum Report {
    /// `charge.refunded` carrying this cumulative `amount_refunded`.
    Refunded(i64),
    /// `charge.dispute.funds_withdrawn` of the set's dispute `n`, for this amount.
    Withdrawn(usize, i64),
    /// `charge.dispute.funds_reinstated` of the set's dispute `n`, for this amount.
    Reinstated(usize, i64),
}

/// What the contract says a Basic purchase (55,000 credits for 3,999) ends with after
/// `reports`, whatever their order: the refunded share plus the shares of disputes
/// withdrawn and never reinstated, at most its credits; and the status by precedence.
fn settled_by_the_rule(reports: &[Report]) -> (i64, &'static str) {
    let (credits, amount) = (55_000_i64, 3_999_i64);
    let share = |part: i64| credits * part.min(amount) / amount;
    let refunded = reports.iter().filter_map(|r| if let Report::Refunded(a) = r { Some(*a) } else { None }).max();
    let refunded = refunded.unwrap_or(0).min(amount);
    let reinstated = |n: usize| reports.iter().any(|r| matches!(r, Report::Reinstated(m, _) if *m == n));
    let holding: Vec<i64> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Withdrawn(n, disputed) if !reinstated(*n) => Some(*disputed),
            _ => None,
        })
        .collect();
    let taken = (share(refunded) + holding.iter().map(|disputed| share(*disputed)).sum::<i64>()).min(credits);
    let status = if refunded >= amount {
        "REFUNDED"
    } else if !holding.is_empty() {
        "DISPUTED"
    } else if refunded > 0 {
        "PARTIALLY_REFUNDED"
    } else {
        "PAID"
    };
    (credits - taken, status)
}

impl TestApp {
    /// Delivers `report` as event `tag` of payment `payment_intent` (dispute ids are
    /// derived from the payment, so every order has its own disputes).
    async fn report(&self, tag: &str, payment_intent: &str, report: Report) {
        let dispute_id = |n: usize| format!("dp_{}_{n}", payment_intent.trim_start_matches("pi_"));
        let payload = match report {
            Report::Refunded(refunded) => {
                event(&format!("evt_{tag}"), "charge.refunded", refunded_charge(payment_intent, 3999, refunded))
            }
            Report::Withdrawn(n, disputed) => event(
                &format!("evt_{tag}"),
                "charge.dispute.funds_withdrawn",
                dispute(&dispute_id(n), payment_intent, disputed),
            ),
            Report::Reinstated(n, disputed) => event(
                &format!("evt_{tag}"),
                "charge.dispute.funds_reinstated",
                dispute(&dispute_id(n), payment_intent, disputed),
            ),
        };
        assert_eq!(self.webhook(&payload).await, 200, "{report:?} for {payment_intent}");
    }
}

async fn refunds_and_disputes_end_the_same_in_every_order_of_delivery(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    // Each set: reports delivered first, in this order, then four permuted in all 24
    // orders. Two `charge.refunded` of one set carry growing cumulative amounts, so the
    // lower one, delivered last, is a stale report of an earlier refund.
    let sets: [(&str, Vec<Report>, [Report; 4]); 4] = [
        (
            "full",
            vec![],
            [Report::Withdrawn(0, 3999), Report::Refunded(2000), Report::Refunded(3999), Report::Reinstated(0, 3999)],
        ),
        (
            "partial",
            vec![],
            [Report::Withdrawn(0, 1500), Report::Refunded(1000), Report::Refunded(2500), Report::Reinstated(0, 1500)],
        ),
        (
            "held",
            vec![Report::Withdrawn(1, 1000)],
            [Report::Withdrawn(0, 1500), Report::Refunded(1000), Report::Refunded(2500), Report::Reinstated(0, 1500)],
        ),
        (
            "capped",
            vec![Report::Withdrawn(1, 3000)],
            [Report::Withdrawn(0, 1500), Report::Refunded(1000), Report::Refunded(2500), Report::Reinstated(0, 1500)],
        ),
    ];
    let mut wrong = Vec::new();
    for (name, first, permuted) in &sets {
        let all: Vec<Report> = first.iter().chain(permuted.iter()).copied().collect();
        let expected = settled_by_the_rule(&all);
        for (number, order) in permutations(permuted.len()).into_iter().enumerate() {
            let (org, key) = app.funded_org(&format!("Commute {name} {number}"), 0).await;
            let intent = format!("pi_commute_{name}_{number}");
            let purchase = app.paid_purchase(&key, &org, "credits_basic", &intent).await;
            for (k, report) in first.iter().enumerate() {
                app.report(&format!("commute_{name}_{number}_first{k}"), &intent, *report).await;
            }
            for &k in &order {
                app.report(&format!("commute_{name}_{number}_{k}"), &intent, permuted[k]).await;
            }
            let balance = app.balance(&key).await;
            let status = app.purchase_status(&key, &purchase).await;
            let (sum, _) = app.transaction_sum(&key).await;
            if (balance, status.as_str()) != expected || sum != balance {
                let delivered: Vec<Report> = order.iter().map(|&k| permuted[k]).collect();
                wrong.push(format!("{name} {first:?} then {delivered:?}: balance {balance} (sum {sum}), {status}"));
            }
        }
    }
    assert!(wrong.is_empty(), "orders that did not end by the rule:\n{}", wrong.join("\n"));
}

async fn a_full_refund_between_a_dispute_and_its_reinstatement_keeps_the_credits_taken(engine: Engine) {
    let Some((app, _fake)) = stripe_app(engine).await else { return };
    let (org, key) = app.funded_org("Reported", 0).await;
    let purchase = app.paid_purchase(&key, &org, "credits_basic", "pi_reported").await;
    assert_eq!(app.balance(&key).await, 55_000);
    app.dispute_event("evt_rep_w", "funds_withdrawn", "dp_reported", "pi_reported", 3999).await;
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "DISPUTED");
    let refund = event("evt_rep_r", "charge.refunded", refunded_charge("pi_reported", 3999, 3999));
    assert_eq!(app.webhook(&refund).await, 200);
    assert_eq!(app.balance(&key).await, 0);
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED", "fully refunded comes before disputed");
    // The dispute is won, but the money went back to the buyer: nothing comes back.
    app.dispute_event("evt_rep_x", "funds_reinstated", "dp_reported", "pi_reported", 3999).await;
    assert_eq!(app.balance(&key).await, 0, "the balance before the purchase");
    assert_eq!(app.purchase_status(&key, &purchase).await, "REFUNDED");
    let corrections = app.corrections(&key).await;
    assert_eq!(corrections.len(), 1, "one REFUND naming the dispute, nothing given back: {corrections:?}");
    assert_eq!((corrections[0].0.as_str(), corrections[0].1), ("REFUND", -55_000));
    assert!(corrections[0].2.contains("dp_reported"), "{corrections:?}");
    assert_eq!(app.transaction_sum(&key).await, (0, 2));
}
