//! The browser surface over HTTP: embedded assets, GraphiQL offline, the console, the
//! elements module, their Content-Security-Policy, CORS, and WebSocket `Origin` checks.
//! (The pages themselves run in Chromium in `browser.rs`.)

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{Engine, TestApp, spawn_app, spawn_app_with};

const SHOP: &str = "https://shop.example";

async fn page(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(format!("{}{path}", app.base)).header("accept", "text/html").send().await.unwrap()
}

/// The `/assets/…` paths a page or module names.
fn asset_paths(text: &str) -> Vec<String> {
    text.match_indices("/assets/")
        .map(|(at, _)| text[at..].split(['"', '\'', ')', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn graphiql_and_the_console_load_only_hashed_assets_of_this_server_under_a_strict_policy() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_CORS_ORIGINS", SHOP)]).await else { return };
    for path in ["/graphql", "/console"] {
        let response = page(&app, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
        let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:") && csp.contains(SHOP), "{csp}");
        let html = response.text().await.unwrap();
        // Nothing from elsewhere: no CDN, no external font, no inline script.
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"), "{path}: {html}");
        assert!(!html.contains("<script>"), "{path} has an inline script");
        let assets = asset_paths(&html);
        assert!(assets.len() >= 3, "{path}: {assets:?}");
        for asset in assets {
            let response = app.client.get(format!("{}{asset}", app.base)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
            assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable", "{asset}");
            let expected = match asset.rsplit('.').next() {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                other => panic!("unexpected asset type {other:?}"),
            };
            assert_eq!(response.headers()["content-type"], expected, "{asset}");
        }
    }
    let graphiql = page(&app, "/graphql").await.text().await.unwrap();
    assert!(graphiql.contains("graphiql.min.") && graphiql.contains("react-dom.production.min."), "{graphiql}");
    // Unknown or unhashed names are not found.
    for missing in ["/assets/elements.js", "/assets/graphiql.min.000000000000.js", "/assets/..%2FCargo.toml"] {
        assert_eq!(app.client.get(format!("{}{missing}", app.base)).send().await.unwrap().status(), 404, "{missing}");
    }
}

#[tokio::test]
async fn graphiql_can_be_turned_off() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_GRAPHIQL", "false")]).await else { return };
    assert_eq!(page(&app, "/graphql").await.status(), 404);
    // GraphQL over GET still works.
    let response = app.client.get(format!("{}/graphql?query=%7B__typename%7D", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_elements_module_has_a_stable_url_and_loads_on_configured_origins() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_CORS_ORIGINS", SHOP)]).await else { return };
    let get = |path: String, origin: &'static str| {
        app.client.get(format!("{}{path}", app.base)).header("origin", origin).send()
    };
    let response = get("/elements.js".into(), SHOP).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(response.headers()["access-control-allow-origin"], SHOP);
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let module = response.text().await.unwrap();
    let hashed = asset_paths(&module);
    assert_eq!(hashed.len(), 1, "{module}");
    let response = get(hashed[0].clone(), SHOP).await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], SHOP);
    let source = response.text().await.unwrap();
    for element in [
        "credits-balance",
        "credits-low-balance-warning",
        "credits-packages",
        "credits-transactions",
        "credits-purchases",
        "credits-usage",
    ] {
        assert!(source.contains(&format!("\"{element}\"")), "{element} is not defined");
    }
    // Another origin gets no CORS grant.
    let response = get("/elements.js".into(), "https://evil.example").await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

async fn upgrade(base: &str, origin: Option<&str>) -> Result<(), u16> {
    let url = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn websockets_from_foreign_browser_origins_are_refused() {
    let Some(app) = spawn_app_with(Engine::Sqlite, &[("CREDITS_CORS_ORIGINS", SHOP)]).await else { return };
    let own = app.base.clone();
    assert_eq!(upgrade(&app.base, Some(&own)).await, Ok(()));
    assert_eq!(upgrade(&app.base, Some(SHOP)).await, Ok(()));
    assert_eq!(upgrade(&app.base, None).await, Ok(()), "servers and CLIs send no Origin");
    assert_eq!(upgrade(&app.base, Some("https://evil.example")).await, Err(403));
    assert_eq!(upgrade(&app.base, Some("null")).await, Err(403));
    // Without configured origins, only our own.
    let Some(app) = spawn_app(Engine::Sqlite).await else { return };
    assert_eq!(upgrade(&app.base, Some(SHOP)).await, Err(403));
    let own = app.base.clone();
    assert_eq!(upgrade(&app.base, Some(&own)).await, Ok(()));
}
