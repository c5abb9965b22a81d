//! Where webhooks may go: no server-side request forgery. A URL must be `https` (or
//! `http` when allowed), carry no credentials, and its host must resolve only to public
//! addresses (unless private ones are allowed): checked when an endpoint is saved, and
//! again at every connection by the HTTP client's resolver, since DNS can change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::WebhookConfig;

/// Whether `ip` is an address of the public internet: not loopback, private, link-local
/// (cloud metadata lives there), shared, multicast, unspecified, documentation or
/// reserved, nor an IPv6 form of one of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
}

/// Checks an endpoint URL's form: scheme, no credentials, a host. Returns it parsed.
pub fn check_form(url: &str, config: &WebhookConfig) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|error| format!("url is not a URL: {error}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if config.allow_http => {}
        "http" => return Err("url must be https (http only with CREDITS_WEBHOOK_ALLOW_HTTP=true)".into()),
        other => return Err(format!("url must be https, not {other}")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host".into());
    }
    if url.len() > 2_048 {
        return Err("url is longer than 2048 characters".into());
    }
    Ok(parsed)
}

/// Checks an endpoint URL fully: its form, and every address its host resolves to.
pub async fn check(url: &str, config: &WebhookConfig) -> Result<url::Url, String> {
    let parsed = check_form(url, config)?;
    if config.allow_private {
        return Ok(parsed);
    }
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses = resolve(&host, port).await.map_err(|error| format!("url's host does not resolve: {error}"))?;
    match addresses.iter().find(|address| !is_public(address.ip())) {
        Some(address) => Err(format!("url's host resolves to {}, which is not a public address", address.ip())),
        None => Ok(parsed),
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addresses.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address"));
    }
    Ok(addresses)
}

/// The HTTP client's resolver: the system's, keeping only public addresses (unless
/// private ones are allowed), so a host that turned private since its endpoint was
/// saved is never connected to. (An address written in the URL itself bypasses any
/// resolver; the dispatcher checks those before sending.)
#[derive(Clone, Debug)]
pub struct PublicResolver {
    /// Whether private addresses are allowed after all.
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses = resolve(name.as_str(), 0).await?;
            let allowed: Vec<SocketAddr> =
                addresses.into_iter().filter(|address| allow_private || is_public(address.ip())).collect();
            if allowed.is_empty() {
                let refused = std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{} resolves only to addresses that are not public", name.as_str()),
                );
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_refused_by_form_and_by_address() {
        let strict = WebhookConfig::default();
        for (url, why) in [
            ("ftp://example.com/hook", "scheme"),
            ("http://example.com/hook", "http"),
            ("https://user:pass@example.com/hook", "credentials"),
            ("not a url", "form"),
            ("https://127.0.0.1/hook", "loopback"),
            ("https://[::1]/hook", "loopback v6"),
            ("https://169.254.169.254/latest/meta-data", "metadata"),
            ("https://10.0.0.5/hook", "private"),
            ("https://localhost/hook", "a name for loopback"),
        ] {
            assert!(check(url, &strict).await.is_err(), "{why}: {url}");
        }
        let relaxed = WebhookConfig { allow_http: true, allow_private: true, ..WebhookConfig::default() };
        assert!(check("http://127.0.0.1:8080/hook", &relaxed).await.is_ok());
        assert!(check("https://user@127.0.0.1/hook", &relaxed).await.is_err(), "credentials never");
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_public_addresses() {
        use reqwest::dns::Resolve;
        let strict = PublicResolver { allow_private: false };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(strict.resolve(name).await.is_err());
        let relaxed = PublicResolver { allow_private: true };
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        assert!(relaxed.resolve(name).await.is_ok());
    }
}
