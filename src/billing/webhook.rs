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
pub fn verify_signature(header: Option<&str>, payload: &[u8], secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, payload).ok_or(SignatureError::Mismatch)?;
    let matched = signatures
        .iter()
        .filter_map(|signature| decode_hex(signature))
        .any(|signature| expected.clone().verify_slice(&signature).is_ok());
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// A `Stripe-Signature` header for `payload`, as Stripe computes it (for tests and tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let hex: String = mac(secret, timestamp, payload)
        .map(|mac| mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect())
        .unwrap_or_default();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The envelope of every event.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// e.g. `checkout.session.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
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
    fn expandable_fields_yield_their_id() {
        assert_eq!(expandable_id(&Some(Value::String("pi_1".into()))).as_deref(), Some("pi_1"));
        assert_eq!(expandable_id(&Some(serde_json::json!({ "id": "pi_2" }))).as_deref(), Some("pi_2"));
        assert_eq!(expandable_id(&None), None);
    }
}
