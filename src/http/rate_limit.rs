//! Fair use: a token bucket per caller (API key, client session, admin token, or client IP without a
//! valid token), from the `governor` crate. Every GraphQL HTTP request and every
//! WebSocket `subscribe` takes one token.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::graphql::Caller;
use crate::graphql::errors::ApiError;

/// Whose bucket a request takes from.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum RateKey {
    /// The admin token.
    Admin,
    /// One organization API key (by id).
    ApiKey(String),
    /// One client session (by id).
    Session(String),
    /// A client without a valid token, by address.
    Ip(IpAddr),
}

impl RateKey {
    /// The bucket of `caller`, calling from `ip`.
    pub fn of(caller: &Caller, ip: IpAddr) -> Self {
        match caller {
            Caller::Admin => Self::Admin,
            Caller::ApiKey { key_id, .. } => Self::ApiKey(key_id.clone()),
            Caller::Session { session_id, .. } => Self::Session(session_id.clone()),
            Caller::Anonymous | Caller::InvalidToken => Self::Ip(ip),
        }
    }
}

/// The buckets of every caller; cheap to clone. `off` (no rate) admits everything.
#[derive(Clone, Debug)]
pub struct RateLimits {
    limiter: Option<Arc<DefaultKeyedRateLimiter<RateKey>>>,
}

impl RateLimits {
    /// Buckets refilling at `rate` a second, holding twice that.
    pub fn new(rate: Option<NonZeroU32>) -> Self {
        let limiter = rate.map(|rate| {
            let burst = rate.checked_mul(NonZeroU32::MIN.saturating_add(1)).unwrap_or(rate);
            Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
        });
        Self { limiter }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &RateKey) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero());
            ApiError::RateLimited { retry_after_secs }
        })
    }

    /// Forgets full buckets now and then, so one-off clients (many IPs) cost no memory
    /// for long. Needs a Tokio runtime; ends when the last clone is dropped.
    pub fn start_pruning(&self) {
        let Some(limiter) = &self.limiter else { return };
        let weak = Arc::downgrade(limiter);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(30));
            loop {
                ticker.tick().await;
                let Some(limiter) = weak.upgrade() else { return };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// The client's address: the peer's, or with `trust_proxy` the first address of
/// `X-Forwarded-For` (the client as the proxy saw it).
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trust_proxy: bool) -> IpAddr {
    let forwarded = trust_proxy
        .then(|| headers.get("x-forwarded-for")?.to_str().ok()?.split(',').next()?.trim().parse::<IpAddr>().ok())
        .flatten();
    forwarded.or(peer.map(|peer| peer.ip())).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_twice_the_rate_and_others_are_untouched() {
        let limits = RateLimits::new(NonZeroU32::new(5));
        let flooding = RateKey::ApiKey("key_a".into());
        let admitted = (0..50).filter(|_| limits.check(&flooding).is_ok()).count();
        assert!((10..=11).contains(&admitted), "{admitted}");
        match limits.check(&flooding) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected RATE_LIMITED, got {other:?}"),
        }
        assert!(limits.check(&RateKey::ApiKey("key_b".into())).is_ok());
        assert!(RateLimits::new(None).check(&flooding).is_ok());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().expect("header"));
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(client_ip(&headers, peer, true), IpAddr::from([203, 0, 113, 7]));
        assert_eq!(client_ip(&headers, peer, false), IpAddr::from([127, 0, 0, 1]));
    }
}
