//! The contract's operations endpoints: `/healthz`, `/readyz`, `/metrics` and `/openapi.json`. (`PORT` being
//! honoured is covered where the suite runs as a child process.)

use serde_json::Value;
use stockroom_e2e::{Backend, ChildApp, TestApp, TestDb};

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");

on_every_store!(
    healthz_answers_200_while_the_process_lives,
    readyz_answers_200_when_the_store_is_reachable,
    metrics_are_prometheus_text_that_count_requests,
    openapi_json_is_openapi_3_1_listing_every_http_api_route_of_the_contract,
    metrics_count_requests_made_before_the_first_scrape,
);

/// `/metrics` as text (the JSON helpers would throw it away).
async fn scrape(app: &stockroom_e2e::Api) -> (u16, String, String) {
    let resp = app.http.get(format!("{}/metrics", app.base)).send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, resp.text().await.expect("metrics text"))
}

/// The sum of `http_requests_total` samples carrying every one of `labels` (0 when there are none yet).
fn requests_total(text: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{") && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn healthz_answers_200_while_the_process_lives(b: Backend) {
    let app = TestApp::spawn(b).await;

    let r = app.get("/healthz").await;

    assert_eq!(r.status, 200, "{r:?}");
}

async fn readyz_answers_200_when_the_store_is_reachable(b: Backend) {
    let app = TestApp::spawn(b).await;

    let r = app.get("/readyz").await;

    assert_eq!(r.status, 200, "{r:?}");
}

async fn metrics_are_prometheus_text_that_count_requests(b: Backend) {
    let app = TestApp::spawn(b).await;
    let labels = [r#"route="/v1/stock/{sku}""#, r#"method="GET""#, r#"status="404""#];
    let (_, _, before) = scrape(&app).await;

    let asked = app.get("/v1/stock/nothing-yet").await;
    let (status, content_type, after) = scrape(&app).await;

    assert_eq!(asked.status, 404);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "Prometheus text, not {content_type:?}");
    assert!(after.contains("# TYPE http_requests_total counter"), "{after}");
    let (was, now) = (requests_total(&before, &labels), requests_total(&after, &labels));
    assert!(now >= was + 1.0, "the request is counted by route template: {was} then {now}\n{after}");
    assert!(!after.contains("nothing-yet"), "raw paths never become labels");
}

async fn openapi_json_is_openapi_3_1_listing_every_http_api_route_of_the_contract(b: Backend) {
    let app = TestApp::spawn(b).await;

    let r = app.get("/openapi.json").await;

    assert_eq!(r.status, 200, "{r:?}");
    let version = r.body["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1, not {version:?}");
    let paths = &r.body["paths"];
    for (path, method) in [
        ("/v1/locations/{location}", "put"),
        ("/v1/locations", "get"),
        ("/v1/adjustments", "post"),
        ("/v1/stock/{sku}", "get"),
        ("/v1/stock", "get"),
        ("/v1/reservations", "post"),
        ("/v1/reservations/{id}", "get"),
        ("/v1/reservations/{id}/commit", "post"),
        ("/v1/reservations/{id}/fulfil", "post"),
        ("/v1/reservations/{id}/release", "post"),
        ("/v1/movements", "get"),
        ("/v1/skus/{sku}/policy", "put"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing from {}", keys(paths));
    }
}

fn keys(v: &Value) -> String {
    v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// In this test process the metrics recorder is shared by every app, so a fresh process shows what a freshly
/// started instance counts before anyone has scraped it.
async fn metrics_count_requests_made_before_the_first_scrape(b: Backend) {
    let db = TestDb::new(b).await;
    let app = ChildApp::spawn(SERVER, &db.url).await;
    let labels = [r#"route="/v1/locations""#, r#"method="GET""#, r#"status="200""#];

    let listed = app.get("/v1/locations").await;
    let (status, _, text) = scrape(&app).await;

    assert_eq!(listed.status, 200);
    assert_eq!(status, 200);
    assert!(requests_total(&text, &labels) >= 1.0, "GET /v1/locations before the first scrape is counted:\n{text}");
}
