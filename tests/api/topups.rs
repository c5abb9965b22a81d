//! Auto top-up against the local fake Stripe (Customers and PaymentIntents in Stripe's
//! wire format): a card saved through Checkout, one top-up per crossing however many
//! requests race, credits exactly once whichever report of the payment comes first,
//! declines and 3-D Secure pausing it, Stripe errors retried with the same key, the
//! monthly limit, and two replicas making one PaymentIntent.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_stripe::{Card, FakeStripe, event, paid_session, refunded_charge, top_up_intent};
use crate::helpers::{Engine, TestApp};
use crate::on_both_engines;
use crate::purchases::{metadata, stripe_app};

on_both_engines!(
    a_saved_card_recharges_once_per_crossing_and_credits_arrive_once,
    fifty_racing_consumes_start_one_top_up_and_the_monthly_limit_holds,
    the_webhook_may_report_the_payment_first_and_twice,
    declines_and_authentication_pause_auto_top_up_until_it_is_set_again,
    stripe_errors_are_retried_with_the_same_idempotency_key,
    a_server_killed_with_a_top_up_unpaid_pays_it_once_after_the_restart,
    a_top_ups_charge_refunded_and_disputed_claws_back_as_for_a_purchase,
    a_refund_reported_before_the_top_up_is_paid_is_settled_when_it_is_credited,
    a_server_killed_after_stripe_charged_and_before_crediting_credits_once,
);

const SET: &str = "mutation($t: Credits, $p: ID, $l: Int, $on: Boolean!) { setAutoTopUp(input: { enabled: $on, threshold: $t, packageId: $p, monthlyLimit: $l }) { enabled threshold packageId monthlyLimit topUpsThisMonth pausedReason paymentMethod { brand last4 expMonth expYear } } }";
const TOP_UPS: &str = "{ creditTopUps(first: 20) { edges { node { id status credits amount currency paymentIntentId failureMessage transaction { id kind amount referenceType referenceId } } } } }";

/// An organization that bought Starter (10,000 credits) keeping its card, with auto
/// top-up on below `threshold` for Starter.
async fn with_saved_card(app: &TestApp, fake: &FakeStripe, threshold: i64, limit: i32) -> (String, String) {
    let (org, key) = app.funded_org("Auto", 0).await;
    let started = app
        .ok(
            Some(&key),
            "mutation { purchasePackage(input: { packageId: \"credits_starter\", saveForAutoTopUp: true }) { checkoutSessionId purchase { id } } }",
            json!({}),
        )
        .await;
    let session = started["purchasePackage"]["checkoutSessionId"].as_str().expect("session").to_owned();
    let purchase = started["purchasePackage"]["purchase"]["id"].as_str().expect("purchase").to_owned();
    // The Checkout belongs to the organization's (new) Customer and keeps the card.
    let checkout = fake.calls().into_iter().find(|call| call.field("mode") == Some("payment")).expect("checkout");
    assert!(checkout.field("customer").is_some_and(|customer| customer.starts_with("cus_")));
    assert_eq!(checkout.field("payment_intent_data[setup_future_usage]"), Some("off_session"));
    // Paid: the card (read from Stripe before the answer) becomes the organization's.
    let mut meta = metadata(&org, "credits_starter", &purchase);
    meta["save_for_auto_top_up"] = json!("true");
    let paid = paid_session(&session, &meta, 999, "usd", &format!("pi_checkout_{org}"));
    assert_eq!(app.webhook(&event(&format!("evt_paid_{org}"), "checkout.session.completed", paid)).await, 200);
    assert_eq!(app.balance(&key).await, 10_000);
    let set = app.ok(Some(&key), SET, json!({ "on": true, "t": threshold, "p": "credits_starter", "l": limit })).await;
    let settings = &set["setAutoTopUp"];
    assert_eq!(settings["paymentMethod"], json!({ "brand": "visa", "last4": "4242", "expMonth": 8, "expYear": 2030 }));
    assert_eq!((settings["enabled"].as_bool(), settings["pausedReason"].as_str()), (Some(true), None));
    (org, key)
}

async fn consume(app: &TestApp, key: &str, amount: i64) {
    app.ok(
        Some(key),
        "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"use\" }) { replayed } }",
        json!({ "a": amount }),
    )
    .await;
}

async fn top_ups(app: &TestApp, key: &str) -> Vec<Value> {
    let data = app.ok(Some(key), TOP_UPS, json!({})).await;
    data["creditTopUps"]["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

async fn wait_for(app: &TestApp, key: &str, what: &str, done: impl Fn(&[Value], i64) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (list, balance) = (top_ups(app, key).await, app.balance(key).await);
        if done(&list, balance) {
            return list;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: top-ups {list:?}, balance {balance}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_saved_card_recharges_once_per_crossing_and_credits_arrive_once(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    let (org, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await; // 4,000 left: below 5,000
    // The list and the balance are two reads: wait until both say so.
    let list = wait_for(&app, &key, "credited", |list, balance| {
        list.len() == 1 && list[0]["status"] == "SUCCEEDED" && balance == 14_000
    })
    .await;
    let top_up = &list[0];
    assert_eq!(top_up["status"], "SUCCEEDED");
    assert_eq!(
        (top_up["credits"].as_i64(), top_up["amount"].as_i64(), top_up["currency"].as_str()),
        (Some(10_000), Some(999), Some("usd"))
    );
    let transaction = &top_up["transaction"];
    assert_eq!((transaction["kind"].as_str(), transaction["amount"].as_i64()), (Some("PURCHASE"), Some(10_000)));
    assert_eq!(
        (transaction["referenceType"].as_str(), transaction["referenceId"].as_str()),
        (Some("topup"), top_up["id"].as_str())
    );
    // One PaymentIntent, its Idempotency-Key the top-up id, confirmed off-session.
    let intents = fake.payment_intents();
    assert_eq!(intents.len(), 1);
    let call = fake.calls().into_iter().find(|call| call.field("off_session").is_some()).expect("payment intent call");
    assert_eq!(call.headers.get("idempotency-key").and_then(|key| key.to_str().ok()), top_up["id"].as_str());
    assert_eq!((call.field("confirm"), call.field("metadata[topup_id]")), (Some("true"), top_up["id"].as_str()));
    assert_eq!(call.field("metadata[organization_id]"), Some(org.as_str()));
    // Stripe's own report of the same payment, delivered twice, changes nothing.
    let intent = top_up["paymentIntentId"].as_str().expect("payment intent");
    for n in 0..2 {
        let succeeded = top_up_intent(intent, top_up["id"].as_str().unwrap(), "succeeded", None);
        assert_eq!(app.webhook(&event(&format!("evt_pi_{n}_{org}"), "payment_intent.succeeded", succeeded)).await, 200);
    }
    assert_eq!(app.balance(&key).await, 14_000);
    // The worker credited it, audited as the server's own doing.
    let audited = app
        .ok(
            Some(crate::helpers::ADMIN_TOKEN),
            "query($o: ID) { auditEvents(organizationId: $o, filter: { actions: [\"COMPLETE_TOP_UP\"] }) { edges { node { actorType targetId } } } }",
            json!({ "o": org }),
        )
        .await;
    assert_eq!(
        audited["auditEvents"]["edges"],
        json!([{ "node": { "actorType": "SYSTEM", "targetId": top_up["id"] } }])
    );
    // Above the threshold again: nothing starts; below it again: a second top-up.
    consume(&app, &key, 1_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(top_ups(&app, &key).await.len(), 1);
    consume(&app, &key, 9_000).await; // 4,000 left
    wait_for(&app, &key, "second", |list, balance| list.len() == 2 && balance == 14_000).await;
    assert_eq!(fake.payment_intents().len(), 2);
}

async fn fifty_racing_consumes_start_one_top_up_and_the_monthly_limit_holds(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    fake.card(Card::Processes); // top-ups stay pending: only the racing is counted
    let (_, key) = with_saved_card(&app, &fake, 9_000, 2).await;
    let consumes: Vec<_> = (0..50).map(|_| consume(&app, &key, 100)).collect();
    futures::future::join_all(consumes).await;
    let list = wait_for(&app, &key, "one started", |list, _| !list.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(top_ups(&app, &key).await.len(), 1, "{list:?}");
    assert_eq!(fake.payment_intents().len(), 1);
    // The limit: a second top-up this month, then no third.
    let intent = fake.payment_intents()[0]["id"].as_str().expect("id").to_owned();
    let first = list[0]["id"].as_str().expect("id").to_owned();
    let succeeded = top_up_intent(&intent, &first, "succeeded", None);
    assert_eq!(app.webhook(&event("evt_limit_1", "payment_intent.succeeded", succeeded)).await, 200);
    consume(&app, &key, 13_000).await; // 10,000 − 5,000 + 10,000 − 13,000 = 2,000
    let list = wait_for(&app, &key, "second", |list, _| list.len() == 2 && fake.payment_intents().len() == 2).await;
    let pending = list.iter().find(|top_up| top_up["status"] == "PENDING").expect("the second is pending");
    let second_intent = fake.payment_intents()[1]["id"].as_str().expect("id").to_owned();
    let succeeded = top_up_intent(&second_intent, pending["id"].as_str().unwrap(), "succeeded", None);
    assert_eq!(app.webhook(&event("evt_limit_2", "payment_intent.succeeded", succeeded)).await, 200);
    consume(&app, &key, 10_000).await; // below the threshold again, the month's two spent
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(top_ups(&app, &key).await.len(), 2, "the monthly limit holds");
    let settings =
        app.ok(Some(&key), "{ organization { autoTopUp { topUpsThisMonth monthlyLimit } } }", json!({})).await;
    assert_eq!(settings["organization"]["autoTopUp"], json!({ "topUpsThisMonth": 2, "monthlyLimit": 2 }));
}

async fn the_webhook_may_report_the_payment_first_and_twice(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    fake.card(Card::Processes); // the create answer says nothing final
    let (org, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    let list = wait_for(&app, &key, "charged", |list, _| !list.is_empty() && !fake.payment_intents().is_empty()).await;
    let top_up = list[0]["id"].as_str().expect("id").to_owned();
    let intent = fake.payment_intents()[0]["id"].as_str().expect("intent").to_owned();
    assert_eq!(app.balance(&key).await, 4_000, "processing: nothing credited yet");
    for n in 0..2 {
        let succeeded = top_up_intent(&intent, &top_up, "succeeded", None);
        assert_eq!(
            app.webhook(&event(&format!("evt_first_{n}_{org}"), "payment_intent.succeeded", succeeded)).await,
            200
        );
    }
    assert_eq!(app.balance(&key).await, 14_000);
    assert_eq!(top_ups(&app, &key).await[0]["status"], "SUCCEEDED");
}

async fn declines_and_authentication_pause_auto_top_up_until_it_is_set_again(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    fake.card(Card::Declines);
    let (_, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    let list =
        wait_for(&app, &key, "declined", |list, _| list.first().is_some_and(|top_up| top_up["status"] == "FAILED"))
            .await;
    assert!(list[0]["failureMessage"].as_str().is_some_and(|message| message.contains("declined")), "{list:?}");
    let paused = app.ok(Some(&key), "{ organization { autoTopUp { enabled pausedReason } } }", json!({})).await;
    assert!(paused["organization"]["autoTopUp"]["pausedReason"].as_str().is_some_and(|why| why.contains("declined")));
    // Paused: more consumes below the threshold start nothing.
    consume(&app, &key, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(top_ups(&app, &key).await.len(), 1);
    // Setting it again lifts the pause; below the threshold already, it starts at once,
    // and 3-D Secure pauses it again.
    fake.card(Card::NeedsAuthentication);
    let set = app.ok(Some(&key), SET, json!({ "on": true })).await;
    assert!(set["setAutoTopUp"]["pausedReason"].is_null());
    let list = wait_for(&app, &key, "authentication", |list, _| {
        list.first().is_some_and(|top_up| top_up["status"] == "REQUIRES_ACTION")
    })
    .await;
    assert_eq!(list.len(), 2);
    let paused = app.ok(Some(&key), "{ organization { autoTopUp { pausedReason } } }", json!({})).await;
    assert!(
        paused["organization"]["autoTopUp"]["pausedReason"].as_str().is_some_and(|why| why.contains("authenticate"))
    );
    // Turning it on needs a card, a package and a threshold; off is always allowed.
    let (_, bare) = app.funded_org("No card", 0).await;
    let refused =
        app.fails(Some(&bare), SET, json!({ "on": true, "t": 10, "p": "credits_starter" }), "BAD_USER_INPUT").await;
    assert!(refused.to_string().contains("saved payment method"));
    app.fails(Some(&bare), SET, json!({ "on": false, "p": "nope" }), "BAD_USER_INPUT").await;
    app.fails(Some(&bare), SET, json!({ "on": false, "l": 0 }), "BAD_USER_INPUT").await;
    app.ok(Some(&bare), SET, json!({ "on": false })).await;
}

async fn stripe_errors_are_retried_with_the_same_idempotency_key(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    fake.card(Card::Errors);
    let (_, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    let started = Instant::now();
    while fake.idempotency_keys("off_session").0 == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never charged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(top_ups(&app, &key).await[0]["status"], "PENDING");
    fake.card(Card::Pays);
    wait_for(&app, &key, "retried and paid", |list, balance| {
        list.first().is_some_and(|top_up| top_up["status"] == "SUCCEEDED") && balance == 14_000
    })
    .await;
    let (calls, keys) = fake.idempotency_keys("off_session");
    assert!(calls >= 2, "retried: {calls} calls");
    assert_eq!(keys, 1, "every call with the one key");
    assert_eq!(fake.payment_intents().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgresql_make_one_payment_intent() {
    let Some((app, fake)) = stripe_app(Engine::Postgres).await else { return };
    let replica = app
        .spawn_replica_with(&[
            ("STRIPE_WEBHOOK_SECRET", "whsec_test_secret"),
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", fake.base.as_str()),
        ])
        .await;
    let (_, key) = with_saved_card(&app, &fake, 9_000, 4).await;
    let other = TestApp::attach(&replica, &app.database_url());
    // Consumes race across the threshold on both replicas; both run a top-up worker.
    let consumes: Vec<_> =
        (0..50).map(|n| if n % 2 == 0 { consume(&app, &key, 100) } else { consume(&other, &key, 100) }).collect();
    futures::future::join_all(consumes).await;
    wait_for(&app, &key, "credited once", |list, balance| {
        list.len() == 1 && list[0]["status"] == "SUCCEEDED" && balance == 15_000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(top_ups(&app, &key).await.len(), 1);
    assert_eq!(fake.payment_intents().len(), 1);
    assert_eq!(fake.idempotency_keys("off_session"), (1, 1), "one call to Stripe, by one replica");
    assert_eq!(other.balance(&key).await, 15_000);
}

/// A server process on `engine`'s fresh database (kept while the test holds it) talking
/// to `fake`, and a client of it.
async fn stripe_server(
    engine: Engine,
    fake: &FakeStripe,
) -> Option<(crate::helpers::TestDatabase, crate::helpers::ServerProcess, TestApp)> {
    let database = crate::helpers::database(engine).await?;
    let server = crate::helpers::ServerProcess::start(
        &database.url,
        &[
            ("STRIPE_WEBHOOK_SECRET", "whsec_test_secret"),
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", fake.base.as_str()),
            ("CREDITS_CHECKOUT_SUCCESS_URL", "https://app.example/billing/success"),
            ("CREDITS_CHECKOUT_CANCEL_URL", "https://app.example/billing/cancel"),
        ],
    )
    .await;
    let app = TestApp::attach(&server.base, &database.url);
    Some((database, server, app))
}

/// Waits until the top-up's PaymentIntent has been asked for `calls` times.
async fn wait_for_charges(fake: &FakeStripe, calls: usize) {
    let started = Instant::now();
    while fake.idempotency_keys("off_session").0 < calls {
        assert!(started.elapsed() < Duration::from_secs(10), "never charged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_server_killed_with_a_top_up_unpaid_pays_it_once_after_the_restart(engine: Engine) {
    let fake = FakeStripe::start().await;
    let Some((_database, mut server, app)) = stripe_server(engine, &fake).await else { return };
    // Stripe fails: the top-up is written (with its change) and stays unpaid.
    fake.card(Card::Errors);
    let (_, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    wait_for_charges(&fake, 1).await;
    // Killed once the failure is written (killed during the call instead, the top-up would
    // wait out its claim, `LEASE_SECS`, before another worker may charge it).
    wait_for(&app, &key, "the failure recorded", |list, _| {
        list.len() == 1 && list[0]["status"] == "PENDING" && list[0]["failureMessage"].is_string()
    })
    .await;
    server.kill();
    fake.card(Card::Pays);
    server.restart().await;
    wait_for(&app, &key, "paid after the restart", |list, balance| {
        list.len() == 1 && list[0]["status"] == "SUCCEEDED" && balance == 14_000
    })
    .await;
    let (_, keys) = fake.idempotency_keys("off_session");
    assert_eq!(keys, 1, "every call with the top-up's one key");
    assert_eq!(fake.payment_intents().len(), 1);
    server.kill();
}

async fn a_server_killed_after_stripe_charged_and_before_crediting_credits_once(engine: Engine) {
    let fake = FakeStripe::start().await;
    let Some((_database, mut server, app)) = stripe_server(engine, &fake).await else { return };
    // Stripe charges the card, and the server is killed before it hears so.
    fake.card(Card::PaysUnanswered);
    let (org, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    wait_for_charges(&fake, 1).await;
    server.kill();
    fake.card(Card::Pays);
    server.restart().await;
    assert_eq!(app.balance(&key).await, 4_000, "not credited before any report of the payment");
    let list = top_ups(&app, &key).await;
    assert_eq!((list.len(), list[0]["status"].as_str()), (1, Some("PENDING")));
    // Stripe's report of the charge (sent whatever became of the create call), twice.
    let intent = fake.payment_intents()[0]["id"].as_str().expect("intent").to_owned();
    for n in 0..2 {
        let succeeded = top_up_intent(&intent, list[0]["id"].as_str().unwrap(), "succeeded", None);
        assert_eq!(
            app.webhook(&event(&format!("evt_kill_{n}_{org}"), "payment_intent.succeeded", succeeded)).await,
            200
        );
    }
    wait_for(&app, &key, "credited once", |list, balance| list[0]["status"] == "SUCCEEDED" && balance == 14_000).await;
    assert_eq!(fake.idempotency_keys("off_session"), (1, 1), "one call to Stripe with the top-up's key");
    assert_eq!(fake.payment_intents().len(), 1);
    server.kill();
}

/// Turns auto top-up off, so that clawbacks below the threshold start nothing.
async fn turn_off(app: &TestApp, key: &str) {
    let set = app.ok(Some(key), SET, json!({ "on": false })).await;
    assert_eq!(set["setAutoTopUp"]["enabled"], false);
}

async fn a_top_ups_charge_refunded_and_disputed_claws_back_as_for_a_purchase(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    let (org, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    let list = wait_for(&app, &key, "credited", |list, balance| {
        list.len() == 1 && list[0]["status"] == "SUCCEEDED" && balance == 14_000
    })
    .await;
    turn_off(&app, &key).await;
    let (top_up, intent) = (list[0]["id"].as_str().expect("id"), list[0]["paymentIntentId"].as_str().expect("pi"));
    // A partial refund takes back its share of the top-up's credits, from its own lot.
    let refunded = event(&format!("evt_tr_{org}"), "charge.refunded", refunded_charge(intent, 999, 500));
    assert_eq!(app.webhook(&refunded).await, 200);
    assert_eq!(app.balance(&key).await, 14_000 - 5_005);
    // Delivered again: nothing more.
    assert_eq!(app.webhook(&refunded).await, 200);
    assert_eq!(app.balance(&key).await, 8_995);
    // A dispute of the rest withdraws the rest; its reinstatement gives it back.
    app.dispute_event(&format!("evt_td1_{org}"), "funds_withdrawn", "dp_topup", intent, 499).await;
    assert_eq!(app.balance(&key).await, 8_995 - 4_994, "the dispute holds back its share");
    app.dispute_event(&format!("evt_td2_{org}"), "funds_reinstated", "dp_topup", intent, 499).await;
    assert_eq!(app.balance(&key).await, 8_995);
    let corrections = app.corrections(&key).await;
    let expected = [
        ("REFUND", -5_005, format!("Refund of top-up {top_up}: 5005 credits")),
        ("REFUND", -4_994, format!("Dispute dp_topup of top-up {top_up}: 4994 credits")),
        ("ADJUSTMENT", 4_994, format!("Dispute dp_topup of top-up {top_up} reinstated: 4994 credits given back")),
    ];
    let expected: Vec<_> = expected.into_iter().map(|(kind, amount, text)| (kind.to_owned(), amount, text)).collect();
    assert_eq!(corrections, expected);
    // The top-up itself stays SUCCEEDED; no second PaymentIntent was made.
    assert_eq!(top_ups(&app, &key).await[0]["status"], "SUCCEEDED");
    assert_eq!(fake.payment_intents().len(), 1);
}

async fn a_refund_reported_before_the_top_up_is_paid_is_settled_when_it_is_credited(engine: Engine) {
    let Some((app, fake)) = stripe_app(engine).await else { return };
    fake.card(Card::Processes); // the create answer says nothing final
    let (org, key) = with_saved_card(&app, &fake, 5_000, 4).await;
    consume(&app, &key, 6_000).await;
    let list = wait_for(&app, &key, "charged", |list, _| !list.is_empty() && !fake.payment_intents().is_empty()).await;
    turn_off(&app, &key).await;
    let top_up = list[0]["id"].as_str().expect("id").to_owned();
    let intent = fake.payment_intents()[0]["id"].as_str().expect("intent").to_owned();
    // Stripe reports the full refund first: nothing is credited yet, so nothing to take.
    let refunded = event(&format!("evt_early_r_{org}"), "charge.refunded", refunded_charge(&intent, 999, 999));
    assert_eq!(app.webhook(&refunded).await, 200);
    assert_eq!(app.balance(&key).await, 4_000);
    // The payment's report credits the top-up and settles the refund in the same step.
    let succeeded = top_up_intent(&intent, &top_up, "succeeded", None);
    assert_eq!(app.webhook(&event(&format!("evt_late_{org}"), "payment_intent.succeeded", succeeded)).await, 200);
    assert_eq!(app.balance(&key).await, 4_000);
    let corrections = app.corrections(&key).await;
    assert_eq!(corrections, vec![("REFUND".to_owned(), -10_000, format!("Refund of top-up {top_up}: 10000 credits"))]);
}
