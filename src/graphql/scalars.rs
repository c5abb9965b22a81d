//! The contract's custom scalars: `Credits` and `DateTime`.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

use crate::ledger::MAX_CREDITS;

/// A whole number of credits within ±(2^53 − 1), serialized as a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credits(pub i64);

fn as_credits(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64().filter(|n| n.unsigned_abs() <= MAX_CREDITS as u64),
        _ => None,
    }
}

/// A whole number of credits, at most 2^53 − 1 in magnitude (exact in every JSON client).
#[Scalar(name = "Credits")]
impl ScalarType for Credits {
    fn parse(value: Value) -> InputValueResult<Self> {
        as_credits(&value).map(Credits).ok_or_else(|| {
            InputValueError::custom(format!("Credits must be a whole number between -{MAX_CREDITS} and {MAX_CREDITS}"))
        })
    }

    fn is_valid(value: &Value) -> bool {
        as_credits(value).is_some()
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// A point in time: RFC 3339 in UTC with `Z` and milliseconds, e.g. `2026-11-25T16:10:02.123Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime(pub chrono::DateTime<Utc>);

fn as_datetime(value: &Value) -> Option<chrono::DateTime<Utc>> {
    match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text).ok().map(|time| time.with_timezone(&Utc)),
        _ => None,
    }
}

/// An RFC 3339 timestamp; output always in UTC with `Z`, input with any offset.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        as_datetime(&value)
            .map(DateTime)
            .ok_or_else(|| InputValueError::custom("DateTime must be an RFC 3339 string like 2026-11-25T16:10:02.123Z"))
    }

    fn is_valid(value: &Value) -> bool {
        as_datetime(value).is_some()
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}
