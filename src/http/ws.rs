//! GraphQL over WebSocket at `/graphql/ws`: the `graphql-transport-ws` protocol (and the
//! legacy `graphql-ws` one of subscriptions-transport-ws), written out here so that its
//! close codes are the protocol's own: 4400 bad message, 4401 subscribe before
//! acknowledgement, 4403 no valid token, 4408 no `connection_init` in time, 4409 a
//! duplicate operation id, 4429 a second `connection_init`.
//!
//! Limits: a frame larger than the request body limit is refused before it is buffered
//! (1009); at most `ws_max_connections_per_token` connections per token (1013); every
//! `subscribe` takes a rate-limit token like an HTTP request.
//!
//! Each connection has one bounded outgoing queue. A subscription whose client reads
//! slowly waits on that queue (its events pile up in the database, not in memory, and
//! are caught up later); a client that stops answering pings is closed. A connection
//! whose API key or client session is revoked closes with 4403 as soon as the revocation
//! hint arrives (re-checked in the database first, see `ledger::events`); a client
//! session's socket also closes with 4403 when the session expires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql_axum::GraphQLProtocol;
use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::AppState;
use super::auth::{bearer_token, caller_for_token};
use super::graphql::{MediaType, operation_span, prepare, refuse, render, spend_budget};
use super::observe::RequestId;
use super::rate_limit::RateKey;
use crate::graphql::{Caller, Origin, request_data};

/// Outgoing messages queued per connection before senders wait (plus one per sender).
///
/// The queue is futures' channel, not Tokio's: Tokio's allocates a block of 32 slots
/// up front (1.5 KiB per socket), futures' a node per queued message, and an idle
/// subscriber's queue is empty.
const OUTGOING_QUEUE: usize = 64;
/// Longest a single write to the client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most operations one connection may run at once.
const MAX_OPERATIONS: usize = 100;

/// Open WebSockets: in all (shutdown waits for none) and per token (a limit).
#[derive(Clone, Debug, Default)]
pub struct SocketCounts {
    open: Arc<AtomicUsize>,
    per_token: Arc<Mutex<HashMap<RateKey, usize>>>,
}

/// One open socket; counted until dropped.
struct OpenSocket {
    counts: SocketCounts,
    token: Option<RateKey>,
}

impl SocketCounts {
    fn open(&self) -> OpenSocket {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenSocket { counts: self.clone(), token: None }
    }

    /// How many WebSockets are open.
    pub fn total(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes once no WebSocket is open.
    pub async fn all_closed(&self) {
        while self.open.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl OpenSocket {
    /// Counts this socket against its token; false when the token has `max` open already.
    fn claim(&mut self, token: RateKey, max: usize) -> bool {
        let mut per_token = crate::lock(&self.counts.per_token);
        let count = per_token.entry(token.clone()).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        self.token = Some(token);
        true
    }

    /// No longer counts this socket against its token: it is closing, and a client may
    /// open its next socket at once (the socket itself stays counted until dropped).
    fn release_token(&mut self) {
        if let Some(token) = self.token.take() {
            let mut per_token = crate::lock(&self.counts.per_token);
            if let Some(count) = per_token.get_mut(&token) {
                *count -= 1;
                if *count == 0 {
                    per_token.remove(&token);
                }
            }
        }
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.release_token();
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a read failed because the peer sent a frame or message over the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)))
}

/// `GET /graphql/ws`: upgrades to a GraphQL WebSocket.
pub async fn upgrade(
    State(state): State<AppState>,
    // Refuses (400) an upgrade that offers neither sub-protocol.
    _offered: GraphQLProtocol,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Cross-site WebSocket hijacking: a browser on another site would send our user's
    // token along; only our own origin and the configured ones may open a socket.
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST).and_then(|value| value.to_str().ok());
        let allowed = origin.to_str().is_ok_and(|origin| state.pages.allows_socket_origin(origin, host));
        if !allowed {
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    // An upgrade spends its budget before anything else (its token is looked up only
    // later, at `connection_init`): a client opening sockets in a loop is refused from
    // its headers like any other request.
    if let Err(error) = spend_budget(&state, &headers, &peer) {
        return refuse(MediaType::Json, error);
    }
    let ip = state.client_address.of(&headers, peer.map(|Extension(ConnectInfo(addr))| addr));
    let header_token =
        headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()).map(|value| bearer_token(value).to_owned());
    // Small buffers: tungstenite's default 128 KiB read buffer per socket would cost more
    // than everything else an idle subscriber holds. Clients' messages are small; a
    // larger one is read in 1 KiB steps into a buffer reserved for its whole length
    // (which the socket then keeps: one large message costs its size for the socket's life).
    let ws = ws
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(state.limits.body_bytes)
        .max_frame_size(state.limits.body_bytes)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024);
    let protocol = ws
        .selected_protocol()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| WebSocketProtocols::from_str(value).ok())
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    let span = tracing::Span::current();
    let open = state.sockets.open();
    // The upgrade's request id stands for every operation of the socket.
    let request_id = request_id.map(|id| id.0.0);
    ws.on_upgrade(move |socket| {
        let connection = Connection::new(state, protocol, span, ip, request_id, open);
        connection.run(socket, header_token)
    })
}

/// One running operation of a connection.
struct Operation {
    task: AbortHandle,
    /// Set by the operation before it queues its last message, so that a client that
    /// reuses the id as soon as it reads that message finds it free.
    ended: Arc<AtomicBool>,
}

impl Operation {
    fn is_over(&self) -> bool {
        self.ended.load(Ordering::Acquire) || self.task.is_finished()
    }
}

/// What the connection loop does next.
enum Flow {
    /// Keep serving.
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Drop the connection without a word: the client does not read.
    Abandon,
}

struct Connection {
    state: AppState,
    legacy: bool,
    span: tracing::Span,
    out: mpsc::Sender<Message>,
    out_rx: Option<mpsc::Receiver<Message>>,
    /// Operations by id; an ended one stays until the next `start` or keep-alive tick.
    operations: HashMap<String, Operation>,
    /// The client's address (the rate-limit bucket without a token).
    ip: std::net::IpAddr,
    /// That address and the upgrade's request id, for audit rows.
    origin: Origin,
    /// This socket in the open counts.
    open: OpenSocket,
}

fn text(value: Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// The token in a `connection_init` payload: an `authorization` key in any letter case.
fn payload_token(payload: &Value) -> Option<String> {
    payload
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.as_str())
        .map(|value| bearer_token(value).to_owned())
}

impl Connection {
    fn new(
        state: AppState,
        protocol: WebSocketProtocols,
        span: tracing::Span,
        ip: std::net::IpAddr,
        request_id: Option<std::sync::Arc<str>>,
        open: OpenSocket,
    ) -> Self {
        let (out, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        Self {
            state,
            legacy: protocol == WebSocketProtocols::SubscriptionsTransportWS,
            span,
            out,
            out_rx: Some(out_rx),
            operations: HashMap::new(),
            ip,
            origin: Origin { client_address: Some(ip), request_id },
            open,
        }
    }

    async fn run(mut self, socket: WebSocket, header_token: Option<String>) {
        let (mut sink, mut incoming) = socket.split();
        let Some(mut out_rx) = self.out_rx.take() else { return };
        let writer = tokio::spawn(async move {
            while let Some(message) = out_rx.next().await {
                let closing = matches!(message, Message::Close(_));
                // A peer that stops reading fills its TCP window; give up on it.
                let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await;
                if !matches!(sent, Ok(Ok(()))) || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let outcome = self.serve(&mut incoming, header_token).await;
        if let Flow::Abandon = outcome {
            writer.abort();
            for (_, operation) in self.operations.drain() {
                operation.task.abort();
            }
            return;
        }
        if let Flow::Close(code, reason) = outcome {
            // Closed by the server: the token's allowance is free again before the
            // handshake below (which waits up to two seconds for a client that has gone).
            self.open.release_token();
            let _ = self.out.try_send(close(code, reason));
            // Complete the closing handshake: read until the client's Close (briefly), so
            // it can read what was queued before our Close frame.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(message)) = incoming.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        for (_, operation) in self.operations.drain() {
            operation.task.abort();
        }
        drop(self.out);
        // A peer that reads nothing cannot hold the socket open for long.
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), writer).await.is_err() {
            abort.abort();
        }
    }

    async fn serve<S>(&mut self, incoming: &mut S, header_token: Option<String>) -> Flow
    where
        S: futures::Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        // 1. `connection_init`, in time, with a valid token.
        let deadline = tokio::time::Instant::now() + self.state.limits.ws_init_timeout;
        // Only the token is kept of the payload: an idle socket holds its state for hours.
        let init_token = loop {
            let message = match tokio::time::timeout_at(deadline, incoming.next()).await {
                Err(_) => return Flow::Close(4408, "Connection initialisation timeout"),
                Ok(Some(Err(error))) if is_too_big(&error) => return Flow::Close(1009, "Message too big"),
                Ok(None | Some(Err(_))) => return Flow::Continue,
                Ok(Some(Ok(message))) => message,
            };
            let parsed = match message {
                Message::Text(text) => serde_json::from_str::<Value>(text.as_str()).ok(),
                Message::Close(_) => return Flow::Continue,
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Binary(_) => None,
            };
            let Some(parsed) = parsed else { return Flow::Close(4400, "Invalid message") };
            match parsed.get("type").and_then(Value::as_str) {
                Some("connection_init") => break parsed.get("payload").and_then(payload_token),
                Some("ping") if !self.legacy => {
                    self.send(json!({ "type": "pong" }));
                }
                Some("subscribe" | "start") => return Flow::Close(4401, "Unauthorized"),
                _ => return Flow::Close(4400, "Invalid message"),
            }
        };
        // Watch revocation hints before reading the key, so a revocation committed
        // between the two is still noticed.
        let key_watch = self.state.ledger.events().key_watch();
        let token = init_token.or(header_token);
        let caller = match token {
            // Boxed, as every database call of this loop: its future is only alive while
            // it runs, and the connection's own future stays small for the socket's life.
            Some(token) => {
                match Box::pin(caller_for_token(&token, self.state.admin_token.as_ref(), &self.state.ledger)).await {
                    Ok(caller) => caller,
                    Err(error) => {
                        tracing::error!(%error, "WebSocket authentication failed: database unavailable");
                        return Flow::Close(4500, "Service unavailable");
                    }
                }
            }
            None => Caller::Anonymous,
        };
        if caller.require_any().is_err() {
            if self.legacy {
                self.send(json!({ "type": "connection_error", "payload": { "message": "Forbidden" } }));
            }
            return Flow::Close(4403, "Forbidden");
        }
        if let Some(organization_id) = caller.organization_id() {
            self.span.record("organization", organization_id);
        }
        if !self.open.claim(RateKey::of(&caller, self.ip), self.state.limits.ws_max_connections_per_token) {
            return Flow::Close(1013, "Too many connections for this token");
        }
        let mut revocation = key_watch.only(&match &caller {
            Caller::ApiKey { key_id, .. } => vec![key_id.as_str()],
            // A session's revocation sends its id; its key's revocation sends the key's
            // (and the ids of the sessions it revoked, which may miss one minted in a race).
            Caller::Session { session_id, key_id, .. } => {
                [Some(session_id.as_str()), key_id.as_deref()].into_iter().flatten().collect()
            }
            _ => Vec::new(),
        });
        // A session's socket ends when the session does.
        let expiry = match &caller {
            Caller::Session { expires_at, .. } => {
                let left = (*expires_at - self.state.ledger.now()).to_std().unwrap_or_default();
                tokio::time::Instant::now() + left
            }
            _ => tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        };
        let expired = tokio::time::sleep_until(expiry);
        tokio::pin!(expired);
        self.send(json!({ "type": "connection_ack" }));
        if self.legacy {
            self.send(json!({ "type": "ka" }));
        }

        // 2. Operations until either side closes.
        let keepalive = self.state.limits.ws_keepalive;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        let mut last_heard = Instant::now();
        let mut last_checked = Instant::now();
        let mut shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                message = incoming.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) if is_too_big(&error) => return Flow::Close(1009, "Message too big"),
                        _ => return Flow::Continue,
                    };
                    last_heard = Instant::now();
                    let flow = match message {
                        Message::Text(text) => self.handle(text.as_str(), &caller),
                        Message::Binary(_) => Flow::Close(4400, "Invalid message"),
                        Message::Ping(_) | Message::Pong(_) => Flow::Continue,
                        Message::Close(_) => return Flow::Continue,
                    };
                    if !matches!(flow, Flow::Continue) {
                        return flow;
                    }
                }
                // Only a hint: the key is re-checked in the database before closing.
                () = revocation.hinted() => {
                    if !Box::pin(self.still_authorized(&caller)).await {
                        return Flow::Close(4403, "Forbidden");
                    }
                }
                _ = ticker.tick() => {
                    // An ended operation's task is freed now, not at the next `start`.
                    self.operations.retain(|_, operation| !operation.is_over());
                    if last_checked.elapsed() >= keepalive * 4 {
                        last_checked = Instant::now();
                        if !Box::pin(self.still_authorized(&caller)).await {
                            return Flow::Close(4403, "Forbidden");
                        }
                    }
                    if last_heard.elapsed() > keepalive * 3 {
                        tracing::info!("closing an unresponsive WebSocket");
                        return Flow::Close(4408, "Keep-alive timeout");
                    }
                    // A WebSocket ping every client answers, plus the protocol's own.
                    let ping = if self.legacy { json!({ "type": "ka" }) } else { json!({ "type": "ping" }) };
                    if self.out.try_send(Message::Ping(Default::default())).is_err() || self.out.try_send(text(ping)).is_err() {
                        tracing::info!("dropping a WebSocket whose client does not read");
                        return Flow::Abandon;
                    }
                }
                () = &mut expired => return Flow::Close(4403, "Forbidden"),
                _ = shutdown.changed() => return Flow::Close(1001, "Server shutting down"),
            }
        }
    }

    /// One client message after the acknowledgement.
    fn handle(&mut self, raw: &str, caller: &Caller) -> Flow {
        let Ok(message) = serde_json::from_str::<Value>(raw) else {
            return Flow::Close(4400, "Invalid message");
        };
        let id = message.get("id").and_then(Value::as_str).map(str::to_owned);
        match (message.get("type").and_then(Value::as_str), id) {
            (Some("connection_init"), _) => Flow::Close(4429, "Too many initialisation requests"),
            (Some("ping"), _) if !self.legacy => self.send(json!({ "type": "pong" })),
            (Some("pong"), _) if !self.legacy => Flow::Continue,
            (Some("subscribe"), Some(id)) if !self.legacy => self.start(id, message.get("payload"), caller),
            (Some("start"), Some(id)) if self.legacy => self.start(id, message.get("payload"), caller),
            (Some("complete"), Some(id)) if !self.legacy => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.task.abort();
                }
                Flow::Continue
            }
            (Some("stop"), Some(id)) if self.legacy => {
                if let Some(operation) = self.operations.remove(&id)
                    && !operation.is_over()
                {
                    operation.task.abort();
                    return self.send(json!({ "type": "complete", "id": id }));
                }
                Flow::Continue
            }
            (Some("connection_terminate"), _) if self.legacy => Flow::Close(1000, "Normal closure"),
            _ => Flow::Close(4400, "Invalid message"),
        }
    }

    /// Starts an operation: its results go out as `next`/`data` messages until it ends.
    fn start(&mut self, id: String, payload: Option<&Value>, caller: &Caller) -> Flow {
        // An ended operation's id may be used again.
        self.operations.retain(|_, operation| !operation.is_over());
        if self.operations.contains_key(&id) {
            return Flow::Close(4409, "Subscriber for this id already exists");
        }
        if self.operations.len() >= MAX_OPERATIONS {
            return Flow::Close(4429, "Too many operations");
        }
        let Some(payload) = payload.cloned() else { return Flow::Close(4400, "Invalid message") };
        let (next, error) = if self.legacy { ("data", "error") } else { ("next", "error") };
        let prepared = self
            .state
            .rate_limits
            .check(&RateKey::budget_of(caller, self.ip))
            .and_then(|()| prepare(payload, &self.state.limits));
        let (request, operation) = match prepared {
            Ok(prepared) => (
                request_data(
                    prepared.request,
                    &self.state.ledger,
                    caller.clone(),
                    self.origin.clone(),
                    self.span.clone(),
                ),
                operation_span(&self.span, prepared.operation.as_ref()),
            ),
            Err(refusal) => {
                let errors = [async_graphql::ServerError::from(refusal)];
                // Through the connection's own sender: a fresh clone of futures' sender
                // always has a slot, so a client that does not read could grow the queue.
                return self.send(json!({ "type": error, "id": id, "payload": errors }));
            }
        };
        let mut out = self.out.clone();
        let ended = Arc::new(AtomicBool::new(false));
        let ending = ended.clone();
        let schema = self.state.schema.clone();
        let task_id = id.clone();
        let task = tokio::spawn(
            async move {
                let mut responses = schema.execute_stream(request);
                while let Some(response) = responses.next().await {
                    let (is_request_error, body) = render(&response);
                    let message = if is_request_error {
                        ending.store(true, Ordering::Release);
                        let errors = serde_json::to_string(&response.errors).unwrap_or_else(|_| "[]".into());
                        format!(r#"{{"type":"{error}","id":{},"payload":{errors}}}"#, json!(task_id))
                    } else {
                        format!(r#"{{"type":"{next}","id":{},"payload":{body}}}"#, json!(task_id))
                    };
                    if out.send(Message::Text(Utf8Bytes::from(message))).await.is_err() {
                        return;
                    }
                    if is_request_error {
                        return;
                    }
                }
                ending.store(true, Ordering::Release);
                let _ = out.send(text(json!({ "type": "complete", "id": task_id }))).await;
            }
            .instrument(operation),
        );
        self.operations.insert(id, Operation { task: task.abort_handle(), ended });
        Flow::Continue
    }

    /// Whether the connection's API key is still valid: asked when a revocation hint
    /// names it (so a revoked key loses its connections at once, on every replica) and,
    /// as a backstop, every few keep-alive intervals. A database hiccup is not a revocation.
    async fn still_authorized(&self, caller: &Caller) -> bool {
        let ledger = &self.state.ledger;
        let live = match caller {
            Caller::ApiKey { key_id, .. } => {
                ledger.api_key(key_id).await.map(|key| key.is_some_and(|k| k.revoked_at.is_none()))
            }
            Caller::Session { session_id, .. } => ledger.client_session_is_live(session_id).await,
            _ => return true,
        };
        live.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not re-check a WebSocket's credentials");
            true
        })
    }

    /// Queues a message without waiting: a client whose queue is full does not read,
    /// and is dropped rather than allowed to stall this loop.
    fn send(&mut self, message: Value) -> Flow {
        match self.out.try_send(text(message)) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Abandon,
        }
    }
}
