//! A minimal GraphQL WebSocket client over tokio-tungstenite, for both sub-protocols.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The current protocol.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy subscriptions-transport-ws protocol.
pub const LEGACY_WS: &str = "graphql-ws";

/// What the server sent.
#[derive(Debug)]
pub enum Received {
    /// A JSON message.
    Json(Value),
    /// The connection closed, with this code.
    Closed(u16),
    /// Nothing within the wait.
    Nothing,
}

/// A connected client.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Opens `/graphql/ws` with `protocol`, optionally an `Authorization` upgrade header.
    pub async fn open(base: &str, protocol: &str, header: Option<&str>) -> Self {
        let url = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(protocol).unwrap());
        if let Some(header) = header {
            request.headers_mut().insert("authorization", HeaderValue::from_str(header).unwrap());
        }
        let (stream, response) = tokio_tungstenite::connect_async(request).await.expect("connect");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        Self { stream }
    }

    /// Opens a connection and sends `connection_init` with `payload`.
    pub async fn init(base: &str, protocol: &str, payload: Value) -> Self {
        let mut client = Self::open(base, protocol, None).await;
        client.send(json!({ "type": "connection_init", "payload": payload })).await;
        client
    }

    /// Opens and initializes with a bearer token; asserts the acknowledgement.
    pub async fn connect(base: &str, protocol: &str, token: &str) -> Self {
        let mut client = Self::init(base, protocol, json!({ "Authorization": format!("Bearer {token}") })).await;
        let ack = client.message().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.stream.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    /// Starts an operation (`subscribe`, or `start` on the legacy protocol).
    pub async fn subscribe(&mut self, legacy: bool, id: &str, query: &str, variables: Value) {
        let kind = if legacy { "start" } else { "subscribe" };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } })).await;
    }

    /// The next protocol message within `wait`, answering pings and skipping keep-alives.
    pub async fn receive(&mut self, wait: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.stream.next()).await else {
                return Received::Nothing;
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON message");
                    match value["type"].as_str() {
                        Some("ka") | Some("pong") => continue,
                        // The server may have closed meanwhile; the close frame follows.
                        Some("ping") => {
                            let _ = self.stream.send(Message::Text(json!({ "type": "pong" }).to_string().into())).await;
                        }
                        _ => return Received::Json(value),
                    }
                }
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map_or(1005, |f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Closed(1006),
            }
        }
    }

    /// The next message, which must come within 10 s.
    pub async fn message(&mut self) -> Value {
        match self.receive(Duration::from_secs(10)).await {
            Received::Json(value) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Sends a frame as it is.
    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.stream.send(message).await;
    }

    /// The close code, which must come within 10 s.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match self.receive(Duration::from_secs(10)).await {
                Received::Closed(code) => return code,
                Received::Json(_) => continue,
                Received::Nothing => panic!("the server did not close the connection"),
            }
        }
    }
}
