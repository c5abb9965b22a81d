//! GraphQL over HTTP, as the spec (and its `graphql-http` audit) asks: media-type
//! negotiation, status codes that tell request errors from execution errors, GET for
//! queries only, and bounded bodies, batches and nesting before anything is parsed.

use std::net::SocketAddr;

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{ServerError, Variables};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tracing::{Instrument, Span};

use super::AppState;
use super::auth::{authenticate, bearer_token, cached_caller};
use super::observe::RequestId;
use super::rate_limit::RateKey;
use crate::config::Limits;
use crate::graphql::context::Caller;
use crate::graphql::errors::ApiError;
use crate::graphql::limits::{self, DocumentLimits, LimitError, check_complexity};
use crate::graphql::{Origin, request_data};
use crate::ledger::CLIENT_SESSION_TOKEN_PREFIX;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The response media type a client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaType {
    /// `application/graphql-response+json`: status codes carry meaning.
    GraphqlResponse,
    /// Legacy `application/json`: 200 for every well-formed request.
    Json,
}

impl MediaType {
    fn negotiate(headers: &HeaderMap) -> Option<Self> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()) else {
            return Some(Self::Json);
        };
        let ranges: Vec<String> = accept
            .split(',')
            .map(|range| range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .collect();
        if ranges.iter().any(|range| range == GRAPHQL_RESPONSE_JSON) {
            Some(Self::GraphqlResponse)
        } else if ranges.iter().any(|range| range == JSON || range == "*/*" || range == "application/*") {
            Some(Self::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

/// The answer to a request refused before it ran: the error's own status (429 with
/// `Retry-After`, 503, 400 …) and a body of that one error, without `data`.
pub(crate) fn refuse(media: MediaType, error: ApiError) -> Response {
    crate::metrics::graphql_error(error.code());
    let status = error.http_status();
    let retry_after = match &error {
        ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
    };
    let body = serde_json::to_string(&Body {
        data: None,
        errors: &[ServerError::from(error)],
        extensions: &Default::default(),
    })
    .unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Where a request came from, for the rate limiter.
pub(crate) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `GET /graphql`: GraphiQL for browsers, otherwise a query from the URL.
pub async fn get(
    State(state): State<AppState>,
    peer: Peer,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: Vec<(String, String)> = raw.as_deref().map(parse_query_string).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && param("query").is_none() {
        if !state.pages.graphiql {
            return StatusCode::NOT_FOUND.into_response();
        }
        return state.pages.page(&headers, super::assets::graphiql_html());
    }
    let Some(media) = MediaType::negotiate(&headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    let budget = match spend_budget(&state, &headers, &peer) {
        Ok(budget) => budget,
        Err(error) => return refuse(media, error),
    };
    let mut fields = Map::new();
    for name in ["query", "operationName", "variables", "extensions"] {
        if let Some(value) = param(name) {
            let value = if name == "variables" || name == "extensions" {
                match serde_json::from_str(value) {
                    Ok(value) => value,
                    Err(_) => return refuse(media, ApiError::BadUserInput(format!("{name} is not valid JSON"))),
                }
            } else {
                Value::String(value.to_owned())
            };
            fields.insert(name.to_owned(), value);
        }
    }
    let prepared = match prepare(Value::Object(fields), &state.limits) {
        Ok(prepared) => prepared,
        Err(error) => return refuse(media, error),
    };
    if prepared.operation.as_ref().is_some_and(|(_, kind)| *kind != OperationType::Query) {
        let mut response = refuse(media, ApiError::BadUserInput("only queries may be sent by GET; use POST".into()));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let origin = origin(&state, &headers, &peer, request_id.map(|Extension(id)| id));
    execute(state, headers, media, vec![prepared], false, budget, origin).await
}

/// Where a request came from: its client's address and its id.
fn origin(state: &AppState, headers: &HeaderMap, peer: &Peer, request_id: Option<RequestId>) -> Origin {
    let ip = state.client_address.of(headers, peer.as_ref().map(|Extension(ConnectInfo(addr))| *addr));
    Origin { client_address: Some(ip), request_id: request_id.map(|id| id.0) }
}

/// `POST /graphql`: a JSON request, or a batch of them. The budget is spent before the
/// body is read, so a refused request costs nothing beyond its headers.
pub async fn post(State(state): State<AppState>, peer: Peer, request: Request) -> Response {
    // The headers are taken out, not copied: reading the body needs only the rest.
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let request_id = parts.extensions.get::<RequestId>().cloned();
    let Some(media) = MediaType::negotiate(&headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    if !is_json_content_type(&headers) {
        let mut response =
            refuse(media, ApiError::BadUserInput("send the request as Content-Type: application/json".into()));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    let budget = match spend_budget(&state, &headers, &peer) {
        Ok(budget) => budget,
        Err(error) => return refuse(media, error),
    };
    // Within the body limit (413 beyond it), read only now.
    let body = match Bytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    // A large body is parsed on the blocking pool: parsing is linear but synchronous, and
    // a burst of large documents must not hold the workers that answer everyone else.
    let parsed = if body.len() > PARSE_ON_WORKER_MAX {
        let limits = state.limits;
        tokio::task::spawn_blocking(move || parse_body(&body, &limits)).await.unwrap_or(Err(ApiError::Internal))
    } else {
        parse_body(&body, &state.limits)
    };
    let (prepared, batch) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return refuse(media, error),
    };
    let origin = origin(&state, &headers, &peer, request_id);
    execute(state, headers, media, prepared, batch, budget, origin).await
}

/// Bodies up to this size are parsed on the worker that received them.
const PARSE_ON_WORKER_MAX: usize = 8 * 1024;

/// A POST body's requests, each checked, and whether they came as a batch (which is
/// limited by the sum of its operations, before any of them runs).
fn parse_body(body: &[u8], limits: &Limits) -> Result<(Vec<Prepared>, bool), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadUserInput(format!("the body is not valid JSON: {error}")))?;
    let (items, batch) = match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > limits.batch_size {
                return Err(ApiError::BadUserInput(format!("a batch holds 1 to {} operations", limits.batch_size)));
            }
            (items, true)
        }
        value => (vec![value], false),
    };
    let prepared = items.into_iter().map(|item| prepare(item, limits)).collect::<Result<Vec<_>, _>>()?;
    let total = prepared.iter().fold(0u64, |sum, request| sum.saturating_add(request.cost));
    check_complexity(total, &DocumentLimits::of(limits))?;
    Ok((prepared, batch))
}

fn parse_query_string(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect()
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let utf8 = parts.all(|param| match param.trim().split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    essence.eq_ignore_ascii_case(JSON) && utf8
}

/// A request that passed every check needing no database: its shape, its nesting
/// (on the raw text), its strings, depth and cost (on the parsed document).
pub(crate) struct Prepared {
    /// The request, its document parsed.
    pub request: async_graphql::Request,
    /// Its cost (see [`crate::graphql::limits`]).
    pub cost: u64,
    /// The selected operation's name (or kind) and kind, when the document parses.
    pub operation: Option<(String, OperationType)>,
}

/// Checks one request object; HTTP and WebSocket alike.
pub(crate) fn prepare(value: Value, limits: &Limits) -> Result<Prepared, ApiError> {
    let bad = |message: &str| ApiError::BadUserInput(message.to_owned());
    let Value::Object(mut fields) = value else {
        return Err(bad("the request must be a JSON object"));
    };
    let query = match fields.remove("query") {
        Some(Value::String(query)) => query,
        Some(_) => return Err(bad("query must be a string")),
        None => return Err(bad("query is required")),
    };
    let operation_name = match fields.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err(bad("operationName must be a string")),
    };
    let variables = match fields.remove("variables") {
        None | Some(Value::Null) => Variables::default(),
        Some(value @ Value::Object(_)) => Variables::from_json(value),
        Some(_) => return Err(bad("variables must be an object")),
    };
    match fields.remove("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err(bad("extensions must be an object")),
    }
    // The parser recurses once per level of selections and values: refuse absurd
    // nesting on the raw text first. Twice the depth limit leaves room for arguments
    // and lists; the standard introspection query needs about 12.
    let max_nesting = limits.query_depth * 2 + 4;
    if limits::nesting_depth(&query) > max_nesting {
        return Err(LimitError::TooDeeplyNested(max_nesting).into());
    }
    // Parsed once here (or found parsed), measured, and handed to the executor with the
    // request.
    let parsed = parse_document(&query);
    let (cost, operation) = match &parsed {
        Some(document) => {
            let cost = limits::measure(document, operation_name.as_deref(), &variables, &DocumentLimits::of(limits))?;
            let name = cost.name.map_or_else(|| format!("anonymous {}", cost.kind), |name| name.to_string());
            (cost.complexity, Some((name, cost.kind)))
        }
        // The executor answers a parse failure itself, with its position.
        None => (0, None),
    };
    let mut request = async_graphql::Request::new(query).variables(variables);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(document) = parsed {
        request.set_parsed_query(document);
    }
    Ok(Prepared { request, cost, operation })
}

/// The longest text [`parse_document`] keeps a document for, and the most text it keeps
/// in all: a parsed document takes up to about a hundred times its text (a field per two
/// characters), so at most a few megabytes, whatever clients send.
const KEPT_DOCUMENT_MAX_LEN: usize = 4 * 1024;
const KEPT_DOCUMENTS_MAX_TEXT: usize = 64 * 1024;

/// Documents parsed recently, by their text, least recently used first, and the length
/// of their texts together (see [`parse_document`]).
struct KeptDocuments {
    documents: lru::LruCache<String, ExecutableDocument>,
    text: usize,
}

impl KeptDocuments {
    fn new() -> Self {
        Self { documents: lru::LruCache::unbounded(), text: 0 }
    }
}

static KEPT: std::sync::LazyLock<std::sync::Mutex<KeptDocuments>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(KeptDocuments::new()));

/// `query` parsed, or `None` when it does not parse (the executor then answers with the
/// error's position). Applications send the same few documents over and over, and under
/// 1,000 organizations' consumes the parser took a tenth of the workers' time (`perf`,
/// docs/performance.md, session 13), while copying a parsed document is a few
/// allocations: so short documents that parse are kept, by their exact text, shared by
/// the process. A document is a function of its text alone; every limit is still
/// measured on it, per request, with that request's variables and limits.
fn parse_document(query: &str) -> Option<ExecutableDocument> {
    parse_kept(&KEPT, query)
}

/// [`parse_document`] with the documents kept in `kept`.
fn parse_kept(kept: &std::sync::Mutex<KeptDocuments>, query: &str) -> Option<ExecutableDocument> {
    let keep = query.len() <= KEPT_DOCUMENT_MAX_LEN;
    if keep && let Some(document) = crate::lock(kept).documents.get(query) {
        return Some(document.clone());
    }
    let document = async_graphql::parser::parse_query(query).ok()?;
    if keep {
        let mut kept = crate::lock(kept);
        if kept.documents.put(query.to_owned(), document.clone()).is_none() {
            kept.text += query.len();
        }
        while kept.text > KEPT_DOCUMENTS_MAX_TEXT {
            let Some((text, _)) = kept.documents.pop_lru() else { break };
            kept.text -= text.len();
        }
    }
    Some(document)
}

/// Takes the request's token from the one bucket its headers name: its credential's,
/// when this server has seen that credential valid recently (see [`RateLimits`]),
/// otherwise its client address's. Before the body is read, parsed or authenticated.
///
/// [`RateLimits`]: super::rate_limit::RateLimits
pub(crate) fn spend_budget(state: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<Budget, ApiError> {
    let ip = state.client_address.of(headers, peer.as_ref().map(|Extension(ConnectInfo(addr))| *addr));
    let (known, budget) = match cached_caller(headers, state.admin_token.as_ref(), &state.ledger) {
        Some(caller) => (RateKey::credential_budget(&caller), Budget::Credential),
        None => match bearer(headers).and_then(|token| state.rate_limits.session_budget(token)) {
            Some(key) => (Some(key), Budget::RememberedSession),
            None => (None, Budget::Address),
        },
    };
    state.rate_limits.check(&known.unwrap_or(RateKey::Ip(ip))).map(|()| budget)
}

/// Which bucket a request's headers named (see [`spend_budget`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Budget {
    /// The admin token's or a cached API key's.
    Credential,
    /// The bucket remembered for a client session token.
    RememberedSession,
    /// The client address's: nothing was known of the token, if any.
    Address,
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    Some(bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?))
}

/// Authenticates and runs one request or a batch (its budget already spent).
/// Authenticates a request whose budget was spent (see [`spend_budget`]). A client
/// session's next requests then spend its key's bucket from their headers alone; a token
/// that no longer authenticates spends its sender's address bucket again. (Only a change
/// is written: a remembered live session costs nothing more here.)
pub(crate) async fn admit(state: &AppState, headers: &HeaderMap, budget: Budget) -> Result<Caller, ApiError> {
    let caller = authenticate(headers, state.admin_token.as_ref(), &state.ledger).await?;
    if let Some(token) = bearer(headers).filter(|token| token.starts_with(CLIENT_SESSION_TOKEN_PREFIX)) {
        match (RateKey::credential_budget(&caller), budget) {
            (Some(key), Budget::Address) => state.rate_limits.remember_session(token, key),
            (None, Budget::RememberedSession) => state.rate_limits.forget_session(token),
            _ => {}
        }
    }
    Ok(caller)
}

async fn execute(
    state: AppState,
    headers: HeaderMap,
    media: MediaType,
    requests: Vec<Prepared>,
    batch: bool,
    budget: Budget,
    origin: Origin,
) -> Response {
    let span = Span::current();
    match (&requests[..], batch) {
        ([Prepared { operation: Some((name, _)), .. }], false) => span.record("operation", name.as_str()),
        (_, true) => span.record("operation", "batch"),
        _ => &span,
    };
    // During an outage, answer at once rather than after the pool's acquire timeout.
    if state.ledger.is_unavailable() {
        return refuse(media, ApiError::ServiceUnavailable);
    }
    let caller = match admit(&state, &headers, budget).await {
        Ok(caller) => caller,
        Err(error) => return refuse(media, error),
    };
    let mut requests: Vec<(async_graphql::Request, Span)> = requests
        .into_iter()
        .map(|prepared| {
            let operation = operation_span(&span, prepared.operation.as_ref());
            (request_data(prepared.request, &state.ledger, caller.clone(), origin.clone(), span.clone()), operation)
        })
        .collect();
    if !batch && let Some((request, span)) = requests.pop() {
        let response = state.schema.execute(request).instrument(span).await;
        let (is_request_error, body) = render(&response);
        let status = if is_request_error && media == MediaType::GraphqlResponse {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        return (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response();
    }
    // One after another, as async-graphql runs a batch, each under its own span.
    let mut bodies = Vec::with_capacity(requests.len());
    for (request, span) in requests {
        bodies.push(render(&state.schema.execute(request).instrument(span).await).1);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, media.content_type())], format!("[{}]", bodies.join(","))).into_response()
}

/// The span of one GraphQL operation: its name and kind, as OpenTelemetry names them.
pub(crate) fn operation_span(parent: &Span, operation: Option<&(String, OperationType)>) -> Span {
    let kind = match operation.map(|(_, kind)| kind) {
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        _ => "query",
    };
    let name = operation.map_or("", |(name, _)| name.as_str());
    tracing::info_span!(
        parent: parent,
        "graphql",
        otel.name = %format_args!("{kind} {name}"),
        graphql.operation.name = name,
        graphql.operation.type = kind,
    )
}

/// The JSON body of one response, fields in query order.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

/// The JSON body of a response, and whether it answers a request error (nothing was
/// executed: a parse, validation or coercion failure), which must carry no `data`.
pub(crate) fn render(response: &async_graphql::Response) -> (bool, String) {
    let is_request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    let body = Body {
        data: (!is_request_error).then_some(&response.data),
        errors: &response.errors,
        extensions: &response.extensions,
    };
    let json = serde_json::to_string(&body).unwrap_or_else(|error| {
        tracing::error!(%error, "response not serializable");
        r#"{"errors":[{"message":"internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#.to_owned()
    });
    (is_request_error, json)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn parsed(kept: &Mutex<KeptDocuments>, query: &str) -> Option<String> {
        parse_kept(kept, query).map(|document| format!("{document:?}"))
    }

    #[test]
    fn a_kept_document_is_the_one_its_text_parses_to() {
        let kept = Mutex::new(KeptDocuments::new());
        let queries = ["{ creditBalance { balance } }", "{ creditBalance { available } }", "query Q { a(x: 1) }"];
        let fresh: Vec<String> = queries
            .iter()
            .map(|query| format!("{:?}", async_graphql::parser::parse_query(query).expect("parses")))
            .collect();
        // Twice over: the first pass parses and keeps, the second finds each kept.
        for _ in 0..2 {
            for (query, fresh) in queries.iter().zip(&fresh) {
                assert_eq!(parsed(&kept, query).as_deref(), Some(fresh.as_str()), "{query}");
            }
        }
        // Text that does not parse is never kept, and a long one parses each time.
        assert_eq!(parsed(&kept, "{ creditBalance {"), None);
        assert_eq!(parsed(&kept, "{ creditBalance {"), None);
        let long = format!("{{ a{} }}", " ".repeat(KEPT_DOCUMENT_MAX_LEN));
        assert!(parsed(&kept, &long).is_some());
        let kept = crate::lock(&kept);
        assert_eq!(kept.documents.len(), queries.len());
        assert!(queries.iter().all(|query| kept.documents.peek(*query).is_some()));
        assert_eq!(kept.text, queries.iter().map(|query| query.len()).sum::<usize>());
    }

    #[test]
    fn kept_documents_are_bounded_by_their_text() {
        let kept = Mutex::new(KeptDocuments::new());
        // Parsed in turn, twice the most text kept: the oldest go, the newest stay.
        let queries: Vec<String> = (0..2 * KEPT_DOCUMENTS_MAX_TEXT / 1_000)
            .map(|n| format!("{{ bound{n:04}{} }}", " ".repeat(1_000 - 14)))
            .collect();
        for query in &queries {
            assert!(parsed(&kept, query).is_some());
        }
        let kept = crate::lock(&kept);
        assert!(kept.text <= KEPT_DOCUMENTS_MAX_TEXT, "{} bytes kept", kept.text);
        assert!(kept.text > KEPT_DOCUMENTS_MAX_TEXT - 1_000, "{} bytes kept", kept.text);
        assert_eq!(kept.text, kept.documents.iter().map(|(text, _)| text.len()).sum::<usize>());
        assert!(kept.documents.peek(queries.last().expect("some").as_str()).is_some());
        assert!(kept.documents.peek(queries[0].as_str()).is_none());
    }
}
