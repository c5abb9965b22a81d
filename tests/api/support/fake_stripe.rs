//! A local fake of Stripe's API, answering with Stripe's own example objects
//! (`fixtures/stripe.json`) and recording what the client sent; plus webhook signing.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Stripe's example objects.
pub fn fixture(name: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("../fixtures/stripe.json")).expect("fixtures");
    all[name].clone()
}

/// How the fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Like Stripe on a good day.
    Normal,
    /// A 500 with Stripe's error shape.
    Fail,
    /// Never answers.
    Hang,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
}

impl Call {
    /// The value of a form field, e.g. `line_items[0][price_data][unit_amount]`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// How the fake answers a PaymentIntent confirmed off-session (auto top-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Card {
    /// `succeeded`.
    Pays,
    /// `succeeded`, remembered under its key, but the answer never leaves: the caller
    /// dies (or gives up) between Stripe's charge and hearing of it.
    PaysUnanswered,
    /// A 402 `card_declined`.
    Declines,
    /// A 402 `authentication_required` (3-D Secure).
    NeedsAuthentication,
    /// `processing`: only the webhook will say.
    Processes,
    /// A 500: Stripe failed; the client tries again with the same key.
    Errors,
}

#[derive(Default)]
struct Inner {
    behaviour: Option<Behaviour>,
    card: Option<Card>,
    calls: Vec<Call>,
    /// Answers already given, by `Idempotency-Key` (Stripe replays them).
    answered: std::collections::HashMap<String, (StatusCode, Value)>,
    /// PaymentIntents created, by id.
    intents: std::collections::HashMap<String, Value>,
}

/// A running fake Stripe.
#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripe {
    /// Starts the fake on 127.0.0.1:0.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/customers", post(create_customer))
            .route("/v1/payment_intents", post(create_payment_intent))
            .route("/v1/payment_intents/{id}", axum::routing::get(get_payment_intent))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake stripe");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    /// Changes how the fake answers from now on.
    pub fn set(&self, behaviour: Behaviour) {
        self.inner.lock().unwrap().behaviour = Some(behaviour);
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// How off-session PaymentIntents fare from now on.
    pub fn card(&self, card: Card) {
        self.inner.lock().unwrap().card = Some(card);
    }

    /// PaymentIntents created (one per distinct `Idempotency-Key`).
    pub fn payment_intents(&self) -> Vec<Value> {
        let mut intents: Vec<Value> = self.inner.lock().unwrap().intents.values().cloned().collect();
        intents.sort_by_key(|intent| intent["id"].as_str().unwrap_or_default().to_owned());
        intents
    }

    /// The calls to a path that carried an `Idempotency-Key`, and how many distinct keys.
    pub fn idempotency_keys(&self, form_field: &str) -> (usize, usize) {
        let calls: Vec<Call> = self.calls().into_iter().filter(|call| call.field(form_field).is_some()).collect();
        let keys: std::collections::HashSet<String> = calls
            .iter()
            .filter_map(|call| call.headers.get("idempotency-key").and_then(|key| key.to_str().ok()).map(str::to_owned))
            .collect();
        (calls.len(), keys.len())
    }
}

/// Records a call and replays the answer Stripe gave to its `Idempotency-Key` before.
fn record(inner: &Arc<Mutex<Inner>>, headers: HeaderMap, body: &[u8]) -> (Call, Option<(StatusCode, Value)>) {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let call = Call { headers, form };
    let mut inner = inner.lock().unwrap();
    inner.calls.push(call.clone());
    let replay = call
        .headers
        .get("idempotency-key")
        .and_then(|key| key.to_str().ok())
        .and_then(|key| inner.answered.get(key).cloned());
    (call, replay)
}

fn remember(inner: &Arc<Mutex<Inner>>, call: &Call, answer: (StatusCode, Value)) -> Response {
    if let Some(key) = call.headers.get("idempotency-key").and_then(|key| key.to_str().ok()) {
        inner.lock().unwrap().answered.insert(key.to_owned(), answer.clone());
    }
    (answer.0, axum::Json(answer.1)).into_response()
}

fn metadata_of(call: &Call) -> Value {
    Value::Object(
        call.form
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((name.to_owned(), json!(value)))
            })
            .collect(),
    )
}

async fn create_customer(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let (call, replay) = record(&inner, headers, &body);
    if let Some((status, answer)) = replay {
        return (status, axum::Json(answer)).into_response();
    }
    let number = inner.lock().unwrap().calls.len();
    let mut customer = fixture("customer");
    customer["id"] = json!(format!("cus_fake{number:04}"));
    customer["metadata"] = metadata_of(&call);
    remember(&inner, &call, (StatusCode::OK, customer))
}

/// The card every fake payment method is.
fn payment_method(id: &str) -> Value {
    let mut method = fixture("payment_method");
    method["id"] = json!(id);
    method
}

async fn create_payment_intent(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let (call, replay) = record(&inner, headers, &body);
    if let Some((status, answer)) = replay {
        return (status, axum::Json(answer)).into_response();
    }
    let (card, number) = {
        let inner = inner.lock().unwrap();
        (inner.card.unwrap_or(Card::Pays), inner.intents.len() + 1)
    };
    if card == Card::Errors {
        let error = json!({ "error": { "type": "api_error", "message": "An unknown error occurred" } });
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
    }
    let mut intent = fixture("payment_intent");
    let id = format!("pi_topup{number:04}");
    intent["id"] = json!(id);
    intent["amount"] = json!(call.field("amount").and_then(|amount| amount.parse::<i64>().ok()));
    intent["currency"] = json!(call.field("currency"));
    intent["customer"] = json!(call.field("customer"));
    intent["payment_method"] = json!(call.field("payment_method"));
    intent["metadata"] = metadata_of(&call);
    intent["setup_future_usage"] = Value::Null;
    let status = match card {
        Card::Pays | Card::PaysUnanswered => "succeeded",
        Card::Processes => "processing",
        Card::Declines | Card::NeedsAuthentication => "requires_payment_method",
        Card::Errors => unreachable!("answered above"),
    };
    intent["status"] = json!(status);
    inner.lock().unwrap().intents.insert(id, intent.clone());
    let answer = match card {
        Card::Declines | Card::NeedsAuthentication => {
            let code = if card == Card::Declines { "card_declined" } else { "authentication_required" };
            let message = if card == Card::Declines {
                "Your card was declined."
            } else {
                "This payment requires authentication."
            };
            let error = json!({ "error": { "type": "card_error", "code": code, "message": message, "payment_intent": intent } });
            (StatusCode::PAYMENT_REQUIRED, error)
        }
        _ => (StatusCode::OK, intent),
    };
    let response = remember(&inner, &call, answer);
    if card == Card::PaysUnanswered {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    response
}

async fn get_payment_intent(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    inner.lock().unwrap().calls.push(Call { headers, form: vec![("get_payment_intent".into(), id.clone())] });
    // A Checkout's PaymentIntent (made by the hosted page, not by us) pays with the
    // fixture's card; ours, as created.
    let mut intent = inner.lock().unwrap().intents.get(&id).cloned().unwrap_or_else(|| {
        let mut intent = fixture("payment_intent");
        intent["id"] = json!(id);
        intent["status"] = json!("succeeded");
        intent["payment_method"] = json!("pm_fake_checkout");
        intent
    });
    let method = intent["payment_method"].as_str().unwrap_or("pm_fake_checkout").to_owned();
    intent["payment_method"] = payment_method(&method);
    axum::Json(intent).into_response()
}

/// A `payment_intent` event's object for a top-up's PaymentIntent.
pub fn top_up_intent(payment_intent: &str, top_up: &str, status: &str, error_code: Option<&str>) -> Value {
    let mut intent = fixture("payment_intent");
    intent["id"] = json!(payment_intent);
    intent["status"] = json!(status);
    intent["metadata"] = json!({ "topup_id": top_up });
    intent["last_payment_error"] = error_code
        .map_or(Value::Null, |code| json!({ "type": "card_error", "code": code, "message": format!("{code}") }));
    intent
}

async fn create_session(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let call = Call { headers, form };
    let (behaviour, number) = {
        let mut inner = inner.lock().unwrap();
        inner.calls.push(call.clone());
        (inner.behaviour.unwrap_or(Behaviour::Normal), inner.calls.len())
    };
    match behaviour {
        Behaviour::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Behaviour::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": { "type": "api_error", "message": "An unknown error occurred" } })),
        )
            .into_response(),
        Behaviour::Normal => {
            let id = format!("cs_test_fake{number:04}");
            let mut session = fixture("checkout.session");
            session["id"] = json!(id);
            session["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
            session["client_reference_id"] = json!(call.field("client_reference_id"));
            session["success_url"] = json!(call.field("success_url"));
            session["cancel_url"] = json!(call.field("cancel_url"));
            let metadata: serde_json::Map<String, Value> = call
                .form
                .iter()
                .filter_map(|(key, value)| {
                    let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
                    Some((name.to_owned(), json!(value)))
                })
                .collect();
            session["metadata"] = Value::Object(metadata);
            session["payment_intent"] = Value::Null;
            axum::Json(session).into_response()
        }
    }
}

/// The `checkout.session` object of a completed payment, as its webhook carries it.
pub fn paid_session(session_id: &str, metadata: &Value, amount: i64, currency: &str, payment_intent: &str) -> Value {
    let mut session = fixture("checkout.session");
    session["id"] = json!(session_id);
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    session["amount_total"] = json!(amount);
    session["amount_subtotal"] = json!(amount);
    session["currency"] = json!(currency);
    session["metadata"] = metadata.clone();
    session["client_reference_id"] = metadata["organization_id"].clone();
    session["payment_intent"] = json!(payment_intent);
    session
}

/// A `charge` refunded by `amount_refunded` in total.
pub fn refunded_charge(payment_intent: &str, amount: i64, amount_refunded: i64) -> Value {
    let mut charge = fixture("charge");
    charge["amount"] = json!(amount);
    charge["amount_captured"] = json!(amount);
    charge["amount_refunded"] = json!(amount_refunded);
    charge["refunded"] = json!(amount_refunded >= amount);
    charge["payment_intent"] = json!(payment_intent);
    charge
}

/// An event envelope (Stripe's example `event`) around `object`.
pub fn event(id: &str, event_type: &str, object: Value) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["data"] = json!({ "object": object });
    event
}

/// A `dispute` of `amount` on the charge of `payment_intent`, as its webhooks carry it.
pub fn dispute(id: &str, payment_intent: &str, amount: i64) -> Value {
    json!({
        "id": id,
        "object": "dispute",
        "amount": amount,
        "currency": "usd",
        "charge": format!("ch_{}", payment_intent.trim_start_matches("pi_")),
        "payment_intent": payment_intent,
        "status": "needs_response",
        "reason": "fraudulent",
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "created": 1_700_000_000,
    })
}
