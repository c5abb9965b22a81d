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

#[derive(Default)]
struct Inner {
    behaviour: Option<Behaviour>,
    calls: Vec<Call>,
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
        let app = Router::new().route("/v1/checkout/sessions", post(create_session)).with_state(inner.clone());
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
