//! GraphQL over HTTP, as the spec (and its `graphql-http` audit) asks: media-type
//! negotiation, status codes that tell request errors from execution errors, GET for
//! queries only, and bounded bodies, batches and nesting before anything is parsed.

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchResponse, Variables};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value, json};
use tracing::Span;

use super::AppState;
use super::auth::authenticate;
use crate::graphql::errors::code;
use crate::graphql::request_data;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// The response media type a client accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediaType {
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

/// A response body of one error, before anything was executed.
fn request_error(status: StatusCode, media: MediaType, error_code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": error_code } }] });
    (status, [(header::CONTENT_TYPE, media.content_type())], body.to_string()).into_response()
}

fn bad_request(media: MediaType, refusal: impl Into<Refusal>) -> Response {
    let Refusal(error_code, message) = refusal.into();
    request_error(StatusCode::BAD_REQUEST, media, error_code, &message)
}

/// `GET /graphql`: GraphiQL for browsers, otherwise a query from the URL.
pub async fn get(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let params: Vec<(String, String)> = raw.as_deref().map(parse_query_string).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && param("query").is_none() {
        return Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").finish())
            .into_response();
    }
    let Some(media) = MediaType::negotiate(&headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    let mut fields = Map::new();
    for name in ["query", "operationName", "variables", "extensions"] {
        if let Some(value) = param(name) {
            let value = if name == "variables" || name == "extensions" {
                match serde_json::from_str(value) {
                    Ok(value) => value,
                    Err(_) => {
                        return bad_request(media, format!("{name} is not valid JSON").as_str());
                    }
                }
            } else {
                Value::String(value.to_owned())
            };
            fields.insert(name.to_owned(), value);
        }
    }
    let request = match parse_request(Value::Object(fields), &state) {
        Ok(request) => request,
        Err(refusal) => return bad_request(media, refusal),
    };
    execute_single(state, headers, media, request, Method::Get).await
}

/// `POST /graphql`: a JSON request, or a batch of them.
pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(media) = MediaType::negotiate(&headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    if !is_json_content_type(&headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            code::BAD_USER_INPUT,
            "send the request as Content-Type: application/json",
        );
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return bad_request(media, format!("the body is not valid JSON: {error}").as_str());
        }
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > state.limits.batch_size {
                let message = format!("a batch holds 1 to {} operations", state.limits.batch_size);
                return bad_request(media, message.as_str());
            }
            let mut requests = Vec::with_capacity(items.len());
            for item in items {
                match parse_request(item, &state) {
                    Ok(request) => requests.push(request),
                    Err(refusal) => return bad_request(media, refusal),
                }
            }
            execute_batch(state, headers, media, requests).await
        }
        value => match parse_request(value, &state) {
            Ok(request) => execute_single(state, headers, media, request, Method::Post).await,
            Err(refusal) => bad_request(media, refusal),
        },
    }
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

/// Why a request was refused before execution: a contract code and a message.
pub(crate) struct Refusal(pub &'static str, pub String);

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        Self(code::BAD_USER_INPUT, message.to_owned())
    }
}

/// Checks the shape of one request object and the nesting of its document.
pub(crate) fn parse_request(value: Value, state: &AppState) -> Result<async_graphql::Request, Refusal> {
    let Value::Object(mut fields) = value else {
        return Err("the request must be a JSON object".into());
    };
    let query = match fields.remove("query") {
        Some(Value::String(query)) => query,
        Some(_) => return Err("query must be a string".into()),
        None => return Err("query is required".into()),
    };
    let operation_name = match fields.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err("operationName must be a string".into()),
    };
    let variables = match fields.remove("variables") {
        None | Some(Value::Null) => Variables::default(),
        Some(value @ Value::Object(_)) => Variables::from_json(value),
        Some(_) => return Err("variables must be an object".into()),
    };
    match fields.remove("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err("extensions must be an object".into()),
    }
    if nesting_depth(&query) > state.limits.query_depth * 2 + 4 {
        let message = format!("the query is nested deeper than {} levels", state.limits.query_depth);
        return Err(Refusal(code::GRAPHQL_VALIDATION_FAILED, message));
    }
    let mut request = async_graphql::Request::new(query).variables(variables);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    Ok(request)
}

/// The deepest nesting of brackets in a document, skipping strings and comments: an
/// absurdly deep document is refused by this linear scan before the parser sees it.
fn nesting_depth(query: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' | '(' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ')' | ']' => depth = depth.saturating_sub(1),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

async fn execute_single(
    state: AppState,
    headers: HeaderMap,
    media: MediaType,
    mut request: async_graphql::Request,
    method: Method,
) -> Response {
    let operation = operation_of(&mut request);
    if let Some((name, _)) = &operation {
        Span::current().record("operation", name.as_str());
    }
    if method == Method::Get && operation.as_ref().is_some_and(|(_, kind)| *kind != OperationType::Query) {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            code::BAD_USER_INPUT,
            "only queries may be sent by GET; use POST",
        );
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let caller = match authenticate(&headers, state.admin_token.as_ref(), &state.ledger).await {
        Ok(caller) => caller,
        Err(error) => return service_unavailable(media, error),
    };
    let request = request_data(request, &state.ledger, caller, Span::current());
    let response = state.schema.execute(request).await;
    let (is_request_error, body) = render(&response);
    let status =
        if is_request_error && media == MediaType::GraphqlResponse { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response()
}

async fn execute_batch(
    state: AppState,
    headers: HeaderMap,
    media: MediaType,
    requests: Vec<async_graphql::Request>,
) -> Response {
    let caller = match authenticate(&headers, state.admin_token.as_ref(), &state.ledger).await {
        Ok(caller) => caller,
        Err(error) => return service_unavailable(media, error),
    };
    Span::current().record("operation", "batch");
    let requests = requests
        .into_iter()
        .map(|request| request_data(request, &state.ledger, caller.clone(), Span::current()))
        .collect();
    let BatchResponse::Batch(responses) =
        state.schema.execute_batch(async_graphql::BatchRequest::Batch(requests)).await
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let bodies: Vec<String> = responses.iter().map(|response| render(response).1).collect();
    (StatusCode::OK, [(header::CONTENT_TYPE, media.content_type())], format!("[{}]", bodies.join(","))).into_response()
}

/// Authentication could not be decided (the database failed): 503 when it is
/// unreachable, 500 otherwise; details only in the log.
fn service_unavailable(media: MediaType, error: crate::ledger::LedgerError) -> Response {
    tracing::error!(%error, "authentication failed");
    match error {
        crate::ledger::LedgerError::Unavailable(_) => request_error(
            StatusCode::SERVICE_UNAVAILABLE,
            media,
            code::SERVICE_UNAVAILABLE,
            "the database is unavailable, try again later",
        ),
        _ => request_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            media,
            code::INTERNAL_SERVER_ERROR,
            "internal server error",
        ),
    }
}

/// The selected operation's name (or kind) and kind, when the document parses.
fn operation_of(request: &mut async_graphql::Request) -> Option<(String, OperationType)> {
    let operation_name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    let (name, operation) = match &document.operations {
        DocumentOperations::Single(operation) => (None, operation),
        DocumentOperations::Multiple(operations) => match &operation_name {
            Some(name) => {
                operations.iter().find(|(key, _)| key.as_str() == name).map(|(key, op)| (Some(key.to_string()), op))?
            }
            None if operations.len() == 1 => operations.iter().next().map(|(key, op)| (Some(key.to_string()), op))?,
            None => return None,
        },
    };
    let kind = operation.node.ty;
    Some((name.unwrap_or_else(|| format!("anonymous {kind}")), kind))
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
    use super::*;

    #[test]
    fn nesting_ignores_brackets_in_strings_and_comments() {
        assert_eq!(nesting_depth("{ a { b } }"), 2);
        assert_eq!(nesting_depth("{ a(x: \"{{{{\\\"{{\") # {{{{\n }"), 2);
        assert_eq!(nesting_depth(&"{a".repeat(1000)), 1000);
    }
}
