//! `GET /export/transactions`: an organization's history as a file, CSV (RFC 4180) or
//! NDJSON, streamed from the database a page at a time in `createdAt` order, so memory
//! stays the same however many rows there are.
//!
//! Authorized like GraphQL (the same budget, the same callers and scopes: a client
//! session needs `READ`), by the `Authorization` header only: a query string carrying a
//! credential is refused even when the header is valid, because URLs end up in logs,
//! histories and `Referer` headers.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream;
use serde_json::json;

use super::AppState;
use super::graphql::{MediaType, Peer, admit, refuse, spend_budget};
use crate::graphql::context::Access;
use crate::graphql::errors::ApiError;
use crate::ledger::{ExportedTransaction, Ledger, TransactionKind};

/// Rows read per page.
const PAGE: u64 = 1_000;

/// Query parameters that name a credential.
const CREDENTIAL_PARAMETERS: &[&str] = &["token", "access_token", "key", "authorization"];

/// The CSV header line: the contract's columns, in order.
const CSV_COLUMNS: [&str; 11] = [
    "id",
    "createdAt",
    "kind",
    "amount",
    "balanceAfter",
    "description",
    "referenceType",
    "referenceId",
    "idempotencyKey",
    "holdId",
    "apiKeyId",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

/// What one export asks for.
struct Export {
    organization_id: String,
    format: Format,
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    kinds: Option<Vec<TransactionKind>>,
}

/// `GET /export/transactions?format=csv|ndjson[&from][&to][&kinds][&organizationId]`.
pub async fn transactions(
    State(state): State<AppState>,
    peer: Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let parameters: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    if parameters.iter().any(|(name, _)| CREDENTIAL_PARAMETERS.iter().any(|refused| name.eq_ignore_ascii_case(refused)))
    {
        let message = "credentials go in the Authorization header, never in the URL";
        return refuse(MediaType::Json, ApiError::BadUserInput(message.into()));
    }
    match prepare(&state, &headers, &peer, parameters).await {
        Ok(export) => stream_export(state.ledger.clone(), export),
        Err(error) => refuse(MediaType::Json, error),
    }
}

async fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    peer: &Peer,
    parameters: Vec<(String, String)>,
) -> Result<Export, ApiError> {
    let budget = spend_budget(state, headers, peer)?;
    if state.ledger.is_unavailable() {
        return Err(ApiError::ServiceUnavailable);
    }
    let caller = admit(state, headers, budget).await?;
    let mut parameters: HashMap<String, String> = parameters.into_iter().collect();
    let requested = parameters.remove("organizationId").map(async_graphql::ID);
    let organization_id = caller.scope(requested.as_ref(), Access::Read)?;
    let bad = |message: String| ApiError::BadUserInput(message);
    let format = match parameters.remove("format").as_deref() {
        None | Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(other) => return Err(bad(format!("format must be csv or ndjson, not {other:?}"))),
    };
    let instant = |name: &str, value: Option<String>| {
        value
            .map(|value| {
                DateTime::parse_from_rfc3339(&value)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| bad(format!("{name} must be an RFC 3339 date-time")))
            })
            .transpose()
    };
    let range = (instant("from", parameters.remove("from"))?, instant("to", parameters.remove("to"))?);
    let kinds = parameters
        .remove("kinds")
        .map(|kinds| {
            kinds
                .split(',')
                .map(|kind| {
                    TransactionKind::from_name(kind.trim()).ok_or_else(|| bad(format!("unknown kind {kind:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if let Some(name) = parameters.keys().next() {
        return Err(bad(format!("unknown parameter {name:?}")));
    }
    // An unknown organization is NOT_FOUND, not an empty file.
    state.ledger.balance(&organization_id).await?;
    Ok(Export { organization_id, format, range, kinds })
}

/// Where the export has got to.
struct Cursor {
    ledger: Ledger,
    export: Export,
    after: Option<(DateTime<Utc>, String)>,
    header: bool,
    done: bool,
}

fn stream_export(ledger: Ledger, export: Export) -> Response {
    let (content_type, extension) = match export.format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let disposition = format!("attachment; filename=\"credits-transactions-{}.{extension}\"", export.organization_id);
    let cursor = Cursor { ledger, export, after: None, header: true, done: false };
    let pages = stream::try_unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return Ok(None);
        }
        let after = cursor.after.as_ref().map(|(at, id)| (*at, id.as_str()));
        let export = &cursor.export;
        let rows = cursor
            .ledger
            .transactions_in_order(&export.organization_id, export.range, export.kinds.as_deref(), after, PAGE)
            .await
            .inspect_err(|error| tracing::error!(%error, "export interrupted: the database failed mid-stream"))?;
        cursor.done = (rows.len() as u64) < PAGE;
        cursor.after = rows.last().map(|last| (last.created_at, last.id.clone()));
        let chunk = match export.format {
            Format::Csv => csv_page(&rows, std::mem::take(&mut cursor.header)),
            Format::Ndjson => ndjson_page(&rows),
        };
        Ok::<_, crate::ledger::LedgerError>(Some((Bytes::from(chunk), cursor)))
    });
    let mut response = Body::from_stream(pages).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn csv_page(rows: &[ExportedTransaction], header: bool) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    // Writing to memory cannot fail; a row that could not be written would be a bug in
    // this function, not something to hide, so it is logged.
    let mut write = |record: &[&str]| {
        if let Err(error) = writer.write_record(record) {
            tracing::error!(%error, "export: a CSV row could not be written");
        }
    };
    if header {
        write(&CSV_COLUMNS);
    }
    for row in rows {
        let (amount, balance_after, created_at) =
            (row.amount.to_string(), row.balance_after.to_string(), timestamp(row.created_at));
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        write(&[
            &row.id,
            &created_at,
            &row.kind,
            &amount,
            &balance_after,
            &text(&row.description),
            &text(&row.reference_type),
            &text(&row.reference_id),
            &text(&row.idempotency_key),
            &text(&row.hold_id),
            &text(&row.api_key_id),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

fn ndjson_page(rows: &[ExportedTransaction]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        let line = json!({
            "id": row.id,
            "organizationId": row.organization_id,
            "createdAt": timestamp(row.created_at),
            "kind": row.kind,
            "amount": row.amount,
            "balanceAfter": row.balance_after,
            "description": row.description,
            "referenceType": row.reference_type,
            "referenceId": row.reference_id,
            "idempotencyKey": row.idempotency_key,
            "holdId": row.hold_id,
            "apiKeyId": row.api_key_id,
            "clientSessionId": row.client_session_id,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
