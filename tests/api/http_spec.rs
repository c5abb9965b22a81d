//! HTTP surface: GraphQL over HTTP (with the spec's own audit), GraphiQL, health probes.

use std::process::Command;

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Engine, spawn_app};

#[tokio::test]
async fn mutations_by_get_are_refused_and_queries_by_get_work() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let url = format!("{}/graphql", app.base);
    let response = app
        .client
        .get(&url)
        .query(&[("query", "mutation { createOrganization(input: { name: \"x\" }) { id } }")])
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let orgs = app.ok(Some(ADMIN_TOKEN), "{ creditPackages { id } }", json!({})).await;
    assert_eq!(orgs["creditPackages"][0]["id"], "credits_starter");

    let response = app.client.get(&url).query(&[("query", "{ creditPackages { id } }")]).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["creditPackages"][1]["id"], "credits_basic");
}

#[tokio::test]
async fn request_errors_have_no_data_and_status_400_for_graphql_response_json() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let send = |query: &str, accept: &str| {
        app.client
            .post(format!("{}/graphql", app.base))
            .header("content-type", "application/json")
            .header("accept", accept)
            .json(&json!({ "query": query }))
            .send()
    };
    let response = send("{", "application/graphql-response+json").await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/graphql-response+json"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("data").is_none());
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED");
    // An execution error keeps data (null) and status 200.
    let response = send("{ creditBalance { balance } }", "application/graphql-response+json").await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("data").is_some());
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // Legacy JSON clients get 200 for request errors too.
    let response = send("{", "application/json").await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = send("{ __typename }", "text/csv").await.unwrap();
    assert_eq!(response.status().as_u16(), 406);
    // Response fields come in query order.
    let text = send("{ z: __typename a: __typename }", "application/json").await.unwrap().text().await.unwrap();
    assert_eq!(text, r#"{"data":{"z":"Query","a":"Query"}}"#);
}

#[tokio::test]
async fn graphiql_and_health_probes_are_served() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let response = app.client.get(format!("{}/graphql", app.base)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.text().await.unwrap().to_lowercase().contains("graphiql"));
    let health = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn an_unreachable_database_is_service_unavailable() {
    use sea_orm::{ConnectOptions, Database};
    let mut options = ConnectOptions::new("postgres://nobody@127.0.0.1:9/none");
    options
        .connect_lazy(true)
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_timeout(std::time::Duration::from_millis(500));
    let db = Database::connect(options).await.expect("lazy pool");
    let config = crate::helpers::test_config("postgres://nobody@127.0.0.1:9/none");
    let app = credits::app::Application::with_database(&config, db).await.expect("bind");
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "query": "{ creditBalance(organizationId: \"org_x\") { balance } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1:9") && !text.contains("nobody"), "no internals leak: {text}");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
}

/// Runs npm `graphql-http`'s `auditServer` (installed by `.ci/run` into `tests/audit`)
/// against a live server: every MUST and SHOULD must pass.
#[tokio::test]
async fn graphql_over_http_audit_passes() {
    let Some(audit_dir) = crate::helpers::node_tool("graphql-http") else { return };
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let url = format!("{}/graphql", app.base);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node").arg("audit.mjs").arg(&url).arg(ADMIN_TOKEN).current_dir(audit_dir).output()
    })
    .await
    .unwrap()
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "audit failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("graphql-http audit:"), "{stdout}");
}

#[tokio::test]
async fn cors_admits_configured_origins_only() {
    let origins = [("CREDITS_CORS_ORIGINS", "https://app.example, https://admin.example")];
    let Some(app) = crate::helpers::spawn_app_with(Engine::Sqlite, &origins).await else {
        return;
    };
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let allowed = preflight("https://admin.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://admin.example");
    let allowed_headers = allowed.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
