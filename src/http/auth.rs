//! Turning an `Authorization` header into a [`Caller`].

use axum::http::{HeaderMap, header::AUTHORIZATION};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::graphql::Caller;
use crate::ledger::{API_KEY_PREFIX, CLIENT_SESSION_TOKEN_PREFIX, Ledger, LedgerError};

/// Compares two secrets in time independent of where they differ: both are hashed
/// first, so neither the length nor the content of the real token leaks through timing.
pub fn constant_time_eq(candidate: &str, secret: &str) -> bool {
    let (a, b) = (Sha256::digest(candidate.as_bytes()), Sha256::digest(secret.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization` value: `Bearer <token>` (scheme in any letter case)
/// or, for WebSocket payloads, the bare token.
pub fn bearer_token(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => value,
    }
}

/// Identifies the caller of a request; only a database failure is an error.
pub async fn authenticate(
    headers: &HeaderMap,
    admin_token: Option<&Secret>,
    ledger: &Ledger,
) -> Result<Caller, LedgerError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let Ok(value) = value.to_str() else {
        return Ok(Caller::InvalidToken);
    };
    caller_for_token(bearer_token(value), admin_token, ledger).await
}

/// The caller of a request as far as it is known without the database: the admin
/// token, or an API key verified recently (see the ledger's key cache). `None` when only
/// the database can tell (a session, an unknown or uncached key, no token at all).
pub fn cached_caller(headers: &HeaderMap, admin_token: Option<&Secret>, ledger: &Ledger) -> Option<Caller> {
    let token = bearer_token(headers.get(AUTHORIZATION)?.to_str().ok()?);
    if admin_token.is_some_and(|admin| constant_time_eq(token, admin.expose())) {
        return Some(Caller::Admin);
    }
    let key = ledger.cached_api_key(token)?;
    Some(Caller::ApiKey { key_id: key.id, organization_id: key.organization_id })
}

/// The caller a bare token stands for.
pub async fn caller_for_token(
    token: &str,
    admin_token: Option<&Secret>,
    ledger: &Ledger,
) -> Result<Caller, LedgerError> {
    if admin_token.is_some_and(|admin| constant_time_eq(token, admin.expose())) {
        return Ok(Caller::Admin);
    }
    if token.starts_with(CLIENT_SESSION_TOKEN_PREFIX) {
        // Expired and revoked sessions are not found: UNAUTHENTICATED, like a bad token.
        return Ok(match ledger.authenticate_client_session(token).await? {
            Some(session) => Caller::Session {
                session_id: session.id,
                organization_id: session.organization_id,
                key_id: session.created_by_key_id,
                scopes: session.scopes,
                expires_at: session.expires_at,
            },
            None => Caller::InvalidToken,
        });
    }
    if !token.starts_with(API_KEY_PREFIX) {
        return Ok(Caller::InvalidToken);
    }
    Ok(match ledger.authenticate_api_key(token).await? {
        Some(key) => Caller::ApiKey { key_id: key.id, organization_id: key.organization_id },
        None => Caller::InvalidToken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("ab", "abc"));
        assert!(!constant_time_eq("", "abc"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_optional() {
        assert_eq!(bearer_token("Bearer xyz"), "xyz");
        assert_eq!(bearer_token("bearer  xyz "), "xyz");
        assert_eq!(bearer_token("xyz"), "xyz");
    }
}
