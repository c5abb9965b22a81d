//! Static assets, every byte embedded in the binary (`include_bytes!`), so the explorer,
//! the console and the elements work with no internet and `cargo build` needs no npm.
//!
//! Each asset is served under a content-hashed name (`/assets/elements.3f9a0c1b2d4e.js`)
//! with `Cache-Control: immutable`: a new build with a changed file gets a new URL, so a
//! year-long cache is never stale. Only the three entry points have fixed URLs and are
//! revalidated: `/elements.js` (a one-line module re-exporting the hashed one, so
//! embedders keep a stable URL), `/console` and GraphiQL at `GET /graphql`.
//!
//! The HTML pages carry a Content-Security-Policy allowing only this server (plus the
//! configured CORS origins for connections): no inline script, no CDN, no external font.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Source {
    /// The file's name under `assets/`.
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! embed {
    ($($name:literal),+ $(,)?) => {
        &[$(Source { name: $name, bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $name)) }),+]
    };
}

/// Every embedded asset (the vendored ones are fetched by `tools/vendor-assets.sh`).
const SOURCES: &[Source] = embed!(
    "vendor/graphiql.min.js",
    "vendor/graphiql.min.css",
    "vendor/react.production.min.js",
    "vendor/react-dom.production.min.js",
    "graphiql.js",
    "elements.js",
    "console.js",
    "console.css",
    "icon.svg",
);

/// The long-cache header of every hashed asset.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// An asset ready to serve.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
}

struct Catalog {
    /// Hashed file name → asset.
    by_file: HashMap<String, Asset>,
    /// Source name → public path (`/assets/…`).
    paths: HashMap<&'static str, String>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `vendor/graphiql.min.js` with hash `h` → `graphiql.min.h.js`.
fn hashed_file_name(name: &str, bytes: &[u8]) -> String {
    let hash = hex::encode(&Sha256::digest(bytes)[..6]);
    let file = name.rsplit('/').next().unwrap_or(name);
    match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{file}.{hash}"),
    }
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut by_file = HashMap::new();
        let mut paths = HashMap::new();
        for source in SOURCES {
            let file = hashed_file_name(source.name, source.bytes);
            paths.insert(source.name, format!("/assets/{file}"));
            by_file.insert(file, Asset { bytes: source.bytes, content_type: content_type(source.name) });
        }
        Catalog { by_file, paths }
    })
}

/// The public path of an embedded asset, by its name under `assets/`.
pub fn path(name: &str) -> &'static str {
    catalog().paths.get(name).map(String::as_str).unwrap_or("/assets/missing")
}

/// `GET /assets/{file}`: an embedded asset, cached for a year.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = catalog().by_file.get(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.bytes,
    )
        .into_response()
}

/// `GET /elements.js`: the elements module at a stable URL. It only re-exports the
/// hashed module, so it is tiny and revalidated, while the module itself is cached for good.
pub async fn elements() -> Response {
    static BODY: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(|| {
        format!(
            "// credits elements: see /console for a page built from them.\nexport * from \"{}\";\n",
            path("elements.js")
        )
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body.as_str(),
    )
        .into_response()
}

/// What browsers may do: the pages served, and the origins allowed besides our own.
#[derive(Clone, Debug, Default)]
pub struct PagePolicy {
    /// The configured CORS origins (`CREDITS_CORS_ORIGINS`).
    pub cors_origins: Vec<String>,
    /// Whether GraphiQL is served (`CREDITS_GRAPHIQL`).
    pub graphiql: bool,
}

impl PagePolicy {
    /// Whether a WebSocket upgrade carrying `origin` may proceed: the server's own origin
    /// (as the request's `Host` names it) or a configured one. Browsers always send
    /// `Origin`; clients without one (servers, CLIs) are not checked at all.
    pub fn allows_socket_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let own = host.is_some_and(|host| origin == format!("http://{host}") || origin == format!("https://{host}"));
        own || self.cors_origins.iter().any(|allowed| allowed == "*" || allowed.trim_end_matches('/') == origin)
    }

    /// The Content-Security-Policy of a page served for `host` (the request's `Host`).
    fn content_security_policy(&self, host: Option<&str>) -> String {
        let mut connect = vec!["'self'".to_owned()];
        if let Some(host) = host.filter(|host| host.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')) {
            connect.push(format!("ws://{host}"));
            connect.push(format!("wss://{host}"));
        }
        connect.extend(
            self.cors_origins
                .iter()
                .filter(|origin| *origin != "*" && origin.bytes().all(|b| b.is_ascii_graphic() && b != b';'))
                .cloned(),
        );
        format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self' data:; \
             connect-src {}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'",
            connect.join(" ")
        )
    }

    /// An HTML page with its policy; revalidated (it names the hashed assets of this build).
    pub fn page(&self, headers: &HeaderMap, html: &'static str) -> Response {
        let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
        let csp = HeaderValue::from_str(&self.content_security_policy(host))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (header::CONTENT_SECURITY_POLICY, csp),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
            html,
        )
            .into_response()
    }
}

/// An HTML template under `assets/` with `{{asset:NAME}}` replaced by asset paths.
fn render(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{asset:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{asset:".len()..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(path(&after[..end]));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The GraphiQL page.
pub fn graphiql_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| render(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/graphiql.html"))))
}

/// The console page.
pub fn console_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| render(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/console.html"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_hashed_name_and_a_known_type() {
        for source in SOURCES {
            let path = path(source.name);
            assert!(path.starts_with("/assets/") && path.matches('.').count() >= 2, "{path}");
            assert_ne!(content_type(source.name), "application/octet-stream", "{}", source.name);
        }
        assert!(graphiql_html().contains(path("vendor/graphiql.min.js")));
        assert!(!graphiql_html().contains("{{asset:"));
        assert!(!console_html().contains("{{asset:"));
    }

    #[test]
    fn the_policy_allows_only_this_server_and_configured_origins() {
        let policy = PagePolicy { cors_origins: vec!["https://shop.example".into(), "*".into()], graphiql: true };
        let csp = policy.content_security_policy(Some("127.0.0.1:8080"));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080 https://shop.example;"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains('*'));
        let csp = policy.content_security_policy(Some("evil; script-src *"));
        assert!(!csp.contains("evil"));
    }

    #[test]
    fn sockets_are_accepted_from_our_own_and_configured_origins_only() {
        let policy = PagePolicy { cors_origins: vec!["https://shop.example".into()], graphiql: true };
        let host = Some("127.0.0.1:8080");
        assert!(policy.allows_socket_origin("http://127.0.0.1:8080", host));
        assert!(policy.allows_socket_origin("https://shop.example", host));
        assert!(!policy.allows_socket_origin("https://evil.example", host));
        assert!(!policy.allows_socket_origin("null", host));
        assert!(!policy.allows_socket_origin("http://127.0.0.1:8080", None));
    }
}
