//! A local webhook receiver: records every delivery (headers, body, when) and answers
//! as the test says, by the delivery's number (0, 1, 2, … in arrival order).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One delivery as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` and the rest, lower-case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The raw body.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The `webhook-id` header.
    pub fn id(&self) -> &str {
        self.headers.get("webhook-id").map_or("", String::as_str)
    }

    /// The body, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// How to answer a delivery.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status with `Retry-After: seconds`.
    RetryAfter(u16, u64),
    /// A redirect to this URL.
    Redirect(String),
    /// Never answer (until the sender gives up).
    Hang,
}

type Script = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

/// A receiver on `127.0.0.1`, stopped when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: std::net::SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let received = Received {
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let reply = {
        let mut all = shared.received.lock().expect("received");
        let script = shared.script.lock().expect("script").clone();
        let reply = script(all.len(), &received);
        all.push(received);
        reply
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK).into_response(),
        Reply::RetryAfter(code, seconds) => {
            (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), [("retry-after", seconds.to_string())])
                .into_response()
        }
        Reply::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    /// A receiver answering every delivery with `script(n, delivery)`.
    pub async fn start(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Self {
        let shared = Shared { received: Arc::default(), script: Arc::new(Mutex::new(Arc::new(script))) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("address");
        let app = Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/hook"), addr, shared, task }
    }

    /// A receiver answering 200 to everything.
    pub async fn ok() -> Self {
        Self::start(|_, _| Reply::Status(200)).await
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received").clone()
    }

    /// Waits (up to `within`) until `done` holds of what was received; returns it.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(started.elapsed() < within, "the receiver got {} deliveries, not what was awaited", received.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Verifies deliveries with the Standard Webhooks reference library (npm
/// `standardwebhooks`) under `secret`: the ids of those that verify, and of those that
/// do not. `None` when Node is not available here (never in CI).
pub fn verify_with_reference_library(secret: &str, deliveries: &[Received]) -> Option<(Vec<String>, Vec<String>)> {
    use std::io::Write;
    let dir = crate::helpers::node_tool("standardwebhooks")?;
    let input = serde_json::json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({ "headers": d.headers, "body": d.body })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new("node")
        .arg(format!("{dir}/verify-webhook.mjs"))
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write");
    let output = child.wait_with_output().expect("node");
    assert!(output.status.success(), "verify-webhook.mjs failed");
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.split_once(' ') {
            Some(("ok", id)) => good.push(id.to_owned()),
            Some(("bad", rest)) => bad.push(rest.to_owned()),
            _ => panic!("unexpected line from verify-webhook.mjs: {line}"),
        }
    }
    Some((good, bad))
}
