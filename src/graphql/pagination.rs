//! Relay pagination arguments: bounds checks and opaque cursors.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::errors::ApiError;
use crate::ledger::PageRequest;

/// Page size when the client gives none.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: i32 = 100;

/// Checks a `first` or `last` argument.
pub fn page_size(name: &str, value: Option<i32>) -> Result<u64, ApiError> {
    match value {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(size) if (0..=MAX_PAGE_SIZE).contains(&size) => Ok(size as u64),
        Some(size) => Err(ApiError::BadUserInput(format!("{name} must be between 0 and {MAX_PAGE_SIZE}, got {size}"))),
    }
}

/// An opaque cursor for a position `tag:value` (clients must not parse it).
pub fn encode_cursor(tag: &str, value: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}:{value}"))
}

/// The value of a cursor made by [`encode_cursor`] with `tag`.
pub fn decode_cursor(tag: &str, cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(tag).and_then(|rest| rest.strip_prefix(':')).map(str::to_owned))
        .ok_or_else(|| ApiError::BadUserInput(format!("invalid cursor {cursor:?}")))
}

/// A cursor for a position in a newest-first list ordered by creation time, then id.
pub fn time_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    encode_cursor("at", &format!("{}|{id}", created_at.timestamp_micros()))
}

/// The position a [`time_cursor`] names, if one was given.
pub fn decode_time_cursor(after: Option<String>) -> Result<Option<(DateTime<Utc>, String)>, ApiError> {
    let Some(after) = after else { return Ok(None) };
    let value = decode_cursor("at", &after)?;
    let bad = || ApiError::BadUserInput(format!("invalid cursor {after:?}"));
    let (micros, id) = value.split_once('|').ok_or_else(bad)?;
    let at = micros.parse().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok(Some((at, id.to_owned())))
}

/// A page of a newest-first list by creation time, read one row past the page (`rows`)
/// to know whether more follow.
pub fn newest_first_page<T, O: async_graphql::OutputType>(
    rows: Vec<T>,
    size: u64,
    after: bool,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
    view: impl Fn(T) -> O,
) -> Connection<String, O, EmptyFields, EmptyFields> {
    let more = rows.len() as u64 > size;
    let mut connection = Connection::new(after, more);
    connection.edges.extend(rows.into_iter().take(size as usize).map(|row| {
        let (at, id) = key(&row);
        Edge::new(time_cursor(at, &id), view(row))
    }));
    connection
}

/// The window of a newest-first list of transactions asked for by Relay arguments.
pub fn transaction_page(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<PageRequest, ApiError> {
    let seq = |cursor: String| -> Result<i64, ApiError> {
        decode_cursor("seq", &cursor)?.parse().map_err(|_| ApiError::BadUserInput(format!("invalid cursor {cursor:?}")))
    };
    let backward = last.is_some() || before.is_some();
    if backward && (first.is_some() || after.is_some()) {
        return Err(ApiError::BadUserInput("paginate with first/after or with last/before, not both".into()));
    }
    Ok(if backward {
        PageRequest::Backward { count: page_size("last", last)?, before: before.map(seq).transpose()? }
    } else {
        PageRequest::Forward { count: page_size("first", first)?, after: after.map(seq).transpose()? }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_tags() {
        let cursor = encode_cursor("seq", "42");
        assert_eq!(decode_cursor("seq", &cursor).ok().as_deref(), Some("42"));
        assert!(decode_cursor("pur", &cursor).is_err());
        assert!(decode_cursor("seq", "!!not base64").is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size("first", None).ok(), Some(DEFAULT_PAGE_SIZE));
        assert!(page_size("first", Some(101)).is_err());
        assert!(page_size("first", Some(-1)).is_err());
        assert!(transaction_page(Some(1), None, Some(1), None).is_err());
    }
}
