//! Stripe webhook events: signature verification (Stripe's scheme) and the few fields of
//! each event type we act on, read leniently so Stripe API-version changes elsewhere in
//! the payload cannot break us.

use std::collections::HashMap;

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// How far a signature's timestamp may be from now, in seconds (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a webhook delivery was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    Missing,
    /// The header has no timestamp or no `v1` signature.
    #[error("malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is more than the tolerance away from now.
    #[error("signature timestamp outside the tolerance")]
    Stale,
    /// No `v1` signature matches the payload.
    #[error("no signature matches the payload")]
    Mismatch,
}

/// The HMAC of `timestamp.payload`; `None` only if the key were refused, which HMAC
/// never does (it accepts keys of any length).
fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Option<hmac::Hmac<Sha256>> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac)
}

/// Checks `Stripe-Signature` (`t=…,v1=…[,v1=…]`) against the raw body: HMAC-SHA256 of
/// `timestamp.payload` with the endpoint secret. Every `v1` is tried (secrets roll over)
/// and compared in constant time.
///
/// The header is attacker-controlled text, so nothing here may panic or overflow: a
/// timestamp that is not a positive `i64` is [`SignatureError::Malformed`], and its
/// distance from `now` is computed with checked arithmetic (`now - i64::MIN` would wrap).
pub fn verify_signature(header: Option<&str>, payload: &[u8], secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                // Two timestamps, or one that is not a Unix time, is not Stripe's header.
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(parse_timestamp(value)?);
            }
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let fresh = now.checked_sub(timestamp).is_some_and(|age| age.unsigned_abs() <= TOLERANCE_SECS.unsigned_abs());
    if !fresh {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, payload).ok_or(SignatureError::Mismatch)?;
    let matched = signatures
        .iter()
        .filter_map(|signature| decode_hex(signature))
        .any(|signature| expected.clone().verify_slice(&signature).is_ok());
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// A Unix time in seconds: decimal digits only (no sign, no spaces), positive, an `i64`.
fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    match value.parse::<i64>() {
        Ok(timestamp) if timestamp > 0 => Ok(timestamp),
        _ => Err(SignatureError::Malformed),
    }
}

/// A `Stripe-Signature` header for `payload`, as Stripe computes it (for tests and tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let hex: String =
        mac(secret, timestamp, payload).map(|mac| hex::encode(mac.finalize().into_bytes())).unwrap_or_default();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Reads a JSON event body (after its signature was verified).
pub fn parse_event(body: &[u8]) -> Result<Event, serde_json::Error> {
    serde_json::from_slice::<Event>(body)
}

/// The envelope of every event.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// e.g. `checkout.session.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The connected account (`acct_…`) an event of Stripe Connect is about; `None` for
    /// our own account's events, the only ones we sell through.
    #[serde(default)]
    pub account: Option<String>,
    /// Whether the event happened in live mode; compared with our key's mode.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// The object the event is about.
    pub data: EventData,
}

/// `data` of an event.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object, as JSON; read with the typed views below.
    pub object: Value,
}

/// The fields of a Checkout Session we use.
#[derive(Debug, Deserialize)]
pub struct SessionObject {
    /// `cs_…`
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    /// Total charged, smallest currency unit.
    #[serde(default)]
    pub amount_total: Option<i64>,
    /// Currency of the total.
    #[serde(default)]
    pub currency: Option<String>,
    /// The PaymentIntent, as an id or an expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    /// Our organization id.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// Our organization, package and purchase ids.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

/// The fields of a PaymentIntent we use (auto top-up's).
#[derive(Debug, Deserialize)]
pub struct PaymentIntentObject {
    /// `pi_…`
    pub id: String,
    /// Our organization, package and top-up ids.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

/// A PaymentIntent's last error.
#[derive(Debug, Deserialize)]
pub struct PaymentError {
    /// `card_declined`, `authentication_required`, …
    #[serde(default)]
    pub code: Option<String>,
    /// Stripe's message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The fields of a Charge we use.
#[derive(Debug, Deserialize)]
pub struct ChargeObject {
    /// `ch_…`
    pub id: String,
    /// Total refunded so far (cumulative), smallest currency unit.
    #[serde(default)]
    pub amount_refunded: i64,
    /// The PaymentIntent, as an id or an expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
}

/// The fields of a Dispute we use.
#[derive(Debug, Deserialize)]
pub struct DisputeObject {
    /// `dp_…`
    pub id: String,
    /// The disputed amount, smallest currency unit.
    pub amount: i64,
    /// Currency of the amount.
    #[serde(default)]
    pub currency: Option<String>,
    /// The disputed charge, as an id or an expanded object.
    #[serde(default)]
    pub charge: Option<Value>,
    /// The PaymentIntent of that charge, as an id or an expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    /// e.g. `needs_response`, `won`, `lost`.
    #[serde(default)]
    pub status: Option<String>,
}

/// The id of an expandable field: either the id string or an object with `id`.
pub fn expandable_id(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(object)) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn a_signed_payload_verifies_and_anything_else_does_not() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, SECRET, 1_000);
        assert_eq!(verify_signature(Some(&header), payload, SECRET, 1_010), Ok(()));
        assert_eq!(verify_signature(Some(&header), b"{}", SECRET, 1_010), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(Some(&header), payload, "whsec_other", 1_010), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(Some(&header), payload, SECRET, 1_000 + 301), Err(SignatureError::Stale));
        assert_eq!(verify_signature(Some(&header), payload, SECRET, 1_000 - 301), Err(SignatureError::Stale));
        assert_eq!(verify_signature(None, payload, SECRET, 1_000), Err(SignatureError::Missing));
        assert_eq!(verify_signature(Some("t=1000"), payload, SECRET, 1_000), Err(SignatureError::Malformed));
        assert_eq!(verify_signature(Some("v1=abcd"), payload, SECRET, 1_000), Err(SignatureError::Malformed));
    }

    #[test]
    fn every_v1_signature_is_tried() {
        let payload = b"{}";
        let good = sign(payload, SECRET, 50);
        let v1 = good.split_once("v1=").map(|(_, v)| v).unwrap();
        let header = format!("t=50,v1={},v0=zz,v1={v1}", "0".repeat(64));
        assert_eq!(verify_signature(Some(&header), payload, SECRET, 60), Ok(()));
    }

    #[test]
    fn out_of_range_or_malformed_timestamps_are_refused_without_overflow() {
        let payload = b"{}";
        let v1 = sign(payload, SECRET, 1_000).split_once("v1=").map(|(_, v)| v.to_owned()).unwrap();
        for t in ["99999999999999999999", "-9223372036854775808", "abc", "", "+1000", " 1000", "0", "-1", "1e3"] {
            let header = format!("t={t},v1={v1}");
            assert_eq!(verify_signature(Some(&header), payload, SECRET, 1_000), Err(SignatureError::Malformed), "{t}");
        }
        // Valid i64 timestamps whose distance from now overflows, both ways.
        for (t, now) in [(i64::MAX, i64::MIN), (1, i64::MIN), (i64::MAX, -5), (i64::MAX, 1_000)] {
            let header = sign(payload, SECRET, t);
            assert_eq!(verify_signature(Some(&header), payload, SECRET, now), Err(SignatureError::Stale), "{t} {now}");
        }
        let twice = format!("t=1000,t=1000,v1={v1}");
        assert_eq!(verify_signature(Some(&twice), payload, SECRET, 1_000), Err(SignatureError::Malformed));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::SECRET;

        proptest! {
            #[test]
            fn arbitrary_headers_and_bodies_never_panic(
                header in ".{0,200}",
                body in proptest::collection::vec(any::<u8>(), 0..512),
                now in any::<i64>(),
            ) {
                let _ = verify_signature(Some(&header), &body, SECRET, now);
                let _ = parse_event(&body);
            }

            #[test]
            fn headers_shaped_like_stripes_never_panic(
                t in prop_oneof![any::<i64>().prop_map(|t| t.to_string()), "[0-9+-]{0,25}", ".{0,12}"],
                v1 in "[0-9a-fA-F]{0,70}",
                extra in "[a-z0-9=,]{0,30}",
                now in any::<i64>(),
            ) {
                let header = format!("t={t},v1={v1},{extra}");
                let _ = verify_signature(Some(&header), b"{}", SECRET, now);
            }

            #[test]
            fn a_correctly_signed_body_always_verifies(
                body in proptest::collection::vec(any::<u8>(), 0..512),
                secret in "whsec_[A-Za-z0-9]{0,40}",
                timestamp in 1..=i64::MAX - TOLERANCE_SECS,
                skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
            ) {
                let header = sign(&body, &secret, timestamp);
                let now = timestamp + skew;
                prop_assert_eq!(verify_signature(Some(&header), &body, &secret, now), Ok(()));
                let mut tampered = body.clone();
                tampered.push(b' ');
                prop_assert_eq!(
                    verify_signature(Some(&header), &tampered, &secret, now),
                    Err(SignatureError::Mismatch)
                );
            }
        }
    }

    #[test]
    fn expandable_fields_yield_their_id() {
        assert_eq!(expandable_id(&Some(Value::String("pi_1".into()))).as_deref(), Some("pi_1"));
        assert_eq!(expandable_id(&Some(serde_json::json!({ "id": "pi_2" }))).as_deref(), Some("pi_2"));
        assert_eq!(expandable_id(&None), None);
    }
}
