//! Budgets: token buckets from the `governor` crate, one per API key (the client
//! sessions it minted included), per organization's admin-minted sessions, for the admin
//! token, and per client address for everything else. Every GraphQL HTTP request takes
//! one token before its body is read, every WebSocket `subscribe` one before it is
//! parsed.
//!
//! A request's bucket must be known from its headers alone, so that a refused request
//! costs nothing beyond them: the admin token and recently verified API keys are known
//! by the ledger's key cache, a client session once it has authenticated (remembered
//! here, by its token's hash); anything else spends its address's bucket. Address
//! buckets live in a bounded table, least recently used out, so a flood of addresses
//! costs bounded memory; an IPv6 client is one /64, the block a single host is given.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use ipnet::IpNet;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::graphql::Caller;
use crate::graphql::errors::ApiError;
use crate::lock;

/// Address buckets kept at most (about 100 bytes each).
const MAX_ADDRESSES: usize = 100_000;
/// Client session tokens whose bucket is remembered at most.
const MAX_SESSIONS: usize = 100_000;

/// One credential, or one client address: whose WebSocket connections are counted
/// together, and (through [`RateKey::budget_of`]) whose bucket a request spends.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum RateKey {
    /// The admin token.
    Admin,
    /// One organization API key (by id), with every client session it minted.
    ApiKey(String),
    /// The client sessions the admin token minted for one organization (by id).
    AdminSessions(String),
    /// One client session (by id): counts its WebSockets, never a budget of its own.
    Session(String),
    /// A client without a valid token, by address.
    Ip(IpAddr),
}

impl RateKey {
    /// The credential of `caller`, calling from `ip` (WebSockets are counted per token).
    pub fn of(caller: &Caller, ip: IpAddr) -> Self {
        match caller {
            Caller::Session { session_id, .. } => Self::Session(session_id.clone()),
            other => Self::budget_of(other, ip),
        }
    }

    /// The bucket `caller`'s requests spend: its credential's (see
    /// [`RateKey::credential_budget`]), else its address's.
    pub fn budget_of(caller: &Caller, ip: IpAddr) -> Self {
        Self::credential_budget(caller).unwrap_or(Self::Ip(client_block(ip)))
    }

    /// The bucket of `caller`'s credential, if it has one: a client session spends its
    /// key's, so that minting more sessions never raises what an organization may send.
    pub fn credential_budget(caller: &Caller) -> Option<Self> {
        match caller {
            Caller::Admin => Some(Self::Admin),
            Caller::ApiKey { key_id, .. } => Some(Self::ApiKey(key_id.clone())),
            Caller::Session { key_id: Some(key_id), .. } => Some(Self::ApiKey(key_id.clone())),
            Caller::Session { key_id: None, organization_id, .. } => Some(Self::AdminSessions(organization_id.clone())),
            Caller::Anonymous | Caller::InvalidToken => None,
        }
    }
}

/// The buckets of every caller; cheap to clone. `off` (no rate) admits everything.
#[derive(Clone, Debug)]
pub struct RateLimits {
    buckets: Option<Arc<Buckets>>,
}

#[derive(Debug)]
struct Buckets {
    quota: Quota,
    /// Credentials' buckets: as many as there are keys and organizations; pruned of full
    /// ones now and then.
    tokens: DefaultKeyedRateLimiter<RateKey>,
    /// Addresses' buckets: bounded.
    addresses: Mutex<LruCache<IpAddr, DefaultDirectRateLimiter>>,
    /// SHA-256 of client session tokens that authenticated, with their bucket.
    sessions: Mutex<LruCache<[u8; 32], RateKey>>,
}

impl RateLimits {
    /// Buckets refilling at `rate` a second, holding twice that.
    pub fn new(rate: Option<NonZeroU32>) -> Self {
        let buckets = rate.map(|rate| {
            let burst = rate.checked_mul(NonZeroU32::MIN.saturating_add(1)).unwrap_or(rate);
            let quota = Quota::per_second(rate).allow_burst(burst);
            Arc::new(Buckets {
                quota,
                tokens: DefaultKeyedRateLimiter::keyed(quota),
                addresses: Mutex::new(LruCache::new(NonZeroUsize::new(MAX_ADDRESSES).unwrap_or(NonZeroUsize::MIN))),
                sessions: Mutex::new(LruCache::new(NonZeroUsize::new(MAX_SESSIONS).unwrap_or(NonZeroUsize::MIN))),
            })
        });
        Self { buckets }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &RateKey) -> Result<(), ApiError> {
        let Some(buckets) = &self.buckets else { return Ok(()) };
        let taken = match key {
            RateKey::Ip(ip) => {
                let mut addresses = lock(&buckets.addresses);
                addresses.get_or_insert(client_block(*ip), || RateLimiter::direct(buckets.quota)).check()
            }
            key => buckets.tokens.check_key(key),
        };
        taken.map_err(refusal)
    }

    /// The bucket a client session token spends, if it has authenticated recently.
    pub fn session_budget(&self, token: &str) -> Option<RateKey> {
        let buckets = self.buckets.as_ref()?;
        lock(&buckets.sessions).get(&token_hash(token)).cloned()
    }

    /// Remembers the bucket of a client session token that just authenticated.
    pub fn remember_session(&self, token: &str, budget: RateKey) {
        if let Some(buckets) = &self.buckets {
            lock(&buckets.sessions).put(token_hash(token), budget);
        }
    }

    /// Forgets a client session token that no longer authenticates, so that a revoked
    /// token spends its sender's address bucket, never its key's.
    pub fn forget_session(&self, token: &str) {
        if let Some(buckets) = &self.buckets {
            lock(&buckets.sessions).pop(&token_hash(token));
        }
    }

    /// How many address buckets are held (for tests).
    pub fn address_buckets(&self) -> usize {
        self.buckets.as_ref().map_or(0, |buckets| lock(&buckets.addresses).len())
    }

    /// Forgets full credential buckets now and then, so that keys no longer used cost no
    /// memory for long. Needs a Tokio runtime; ends when the last clone is dropped.
    pub fn start_pruning(&self) {
        let Some(buckets) = &self.buckets else { return };
        let weak = Arc::downgrade(buckets);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(30));
            loop {
                ticker.tick().await;
                let Some(buckets) = weak.upgrade() else { return };
                buckets.tokens.retain_recent();
                buckets.tokens.shrink_to_fit();
            }
        });
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn refusal(not_until: NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero());
    crate::metrics::rate_limited();
    ApiError::RateLimited { retry_after_secs }
}

/// The block one client is charged as: an IPv4 address, or an IPv6 /64 (a single host
/// is given a whole /64 and may use any address in it).
fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// Where requests come from: the peer, or behind a proxy the address it appended.
#[derive(Clone, Debug, Default)]
pub struct ClientAddress {
    /// Whether `X-Forwarded-For` is read at all (`CREDITS_TRUST_PROXY`).
    pub trust_proxy: bool,
    /// Proxies of our own, skipped from the right (`CREDITS_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<[IpNet]>,
}

impl ClientAddress {
    /// The client's address. Behind a proxy: the rightmost address of
    /// `X-Forwarded-For` (every header of that name, in order) that is not one of our own
    /// proxies. Whatever a client writes to the left of that is its own claim and is
    /// ignored; a header that does not parse there leaves the peer's address.
    pub fn of(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |peer| peer.ip());
        if !self.trust_proxy {
            return peer;
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or_default().rsplit(','))
            .map(|hop| hop.trim().parse::<IpAddr>());
        loop {
            match hops.next() {
                Some(Ok(hop)) if self.trusted_proxies.iter().any(|proxy| proxy.contains(&hop)) => continue,
                Some(Ok(hop)) => return hop,
                Some(Err(_)) | None => return peer,
            }
        }
    }
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
    fn address_buckets_are_bounded_and_an_ipv6_host_is_its_64() {
        let limits = RateLimits::new(NonZeroU32::new(1));
        for n in 0..(MAX_ADDRESSES as u32 + 5_000) {
            let _ = limits.check(&RateKey::Ip(IpAddr::from(n.to_be_bytes())));
        }
        assert_eq!(limits.address_buckets(), MAX_ADDRESSES);
        let host: Ipv6Addr = "2001:db8:1:2::1".parse().expect("address");
        let admitted = (0..20u16)
            .filter(|n| {
                let mut segments = host.segments();
                segments[7] = *n;
                limits.check(&RateKey::Ip(IpAddr::V6(Ipv6Addr::from(segments)))).is_ok()
            })
            .count();
        assert_eq!(admitted, 2, "one /64 is one client");
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_appended() {
        let headers = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-for", value.parse().expect("header"));
            }
            headers
        };
        let peer = Some(SocketAddr::from(([10, 0, 0, 9], 9)));
        let direct = ClientAddress::default();
        let behind = ClientAddress { trust_proxy: true, trusted_proxies: Arc::from([]) };
        let trusted: Arc<[IpNet]> = Arc::from(["10.0.0.0/8".parse::<IpNet>().expect("cidr")]);
        let behind_two = ClientAddress { trust_proxy: true, trusted_proxies: trusted };
        // The client writes the left part; the proxy appends what it saw.
        let forged = headers(&["203.0.113.7, 198.51.100.7"]);
        assert_eq!(direct.of(&forged, peer), IpAddr::from([10, 0, 0, 9]));
        assert_eq!(behind.of(&forged, peer), IpAddr::from([198, 51, 100, 7]));
        // Our own proxies are skipped from the right, across repeated headers.
        let chained = headers(&["203.0.113.7, 198.51.100.7", "10.1.2.3", "10.0.0.1"]);
        assert_eq!(behind_two.of(&chained, peer), IpAddr::from([198, 51, 100, 7]));
        assert_eq!(behind.of(&chained, peer), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(behind.of(&headers(&["203.0.113.7, garbage"]), peer), IpAddr::from([10, 0, 0, 9]));
        assert_eq!(behind.of(&HeaderMap::new(), peer), IpAddr::from([10, 0, 0, 9]));
        assert_eq!(behind_two.of(&headers(&["10.0.0.2"]), peer), IpAddr::from([10, 0, 0, 9]));
    }
}
