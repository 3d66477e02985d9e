//! `/healthz` (the process answers), `/readyz` (the store answers too) and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use stockroom_store::Ping;

use crate::http::{ApiError, Fault, json_response};

pub fn router(store: Arc<dyn Ping>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(store)
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object),
              (status = 503, response = inline(crate::openapi::Unavailable))))]
pub(crate) async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store before it says "not ready": a probe must hear back before its own
/// timeout (Cloud Run's startup probe gives 1 s by default), not after the pool's acquire timeout.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(800);

/// Ready: the store answers too, within 800 ms.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ready\"}`", body = Object),
              (status = 503, response = inline(crate::openapi::Unavailable))))]
pub(crate) async fn readyz(State(store): State<Arc<dyn Ping>>) -> Response {
    let ping = tokio::time::timeout(READY_WAIT, store.ping()).await.unwrap_or_else(|_| {
        Err(stockroom_store::StoreError::transient(format!("no answer from the store within {READY_WAIT:?}")))
    });
    match ping {
        Ok(()) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        Err(e) => {
            tracing::warn!(error = ?e, "not ready");
            ApiError::new(Fault::Unavailable, "not_ready", "the store is not reachable").into_response()
        }
    }
}

/// Prometheus text: requests by route template, method and status, and the suite's own counters.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
              (status = 503, response = inline(crate::openapi::Unavailable))))]
pub(crate) async fn metrics() -> Response {
    let body = crate::metrics::handle().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use stockroom_store::StoreError;
    use tower::ServiceExt;

    use super::*;

    /// A store that never answers, as one behind a dead connection does until the pool gives up.
    struct Silent;

    #[async_trait::async_trait]
    impl Ping for Silent {
        async fn ping(&self) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readyz_says_not_ready_without_waiting_for_a_store_that_does_not_answer() {
        let request = Request::get("/readyz").body(Body::empty()).expect("a request");
        // Paused time: the probe's own wait is what moves the clock, so this shows the answer comes from it.
        let answer = tokio::time::timeout(Duration::from_secs(2), router(Arc::new(Silent)).oneshot(request)).await;
        let response = answer.expect("an answer before the 2 s a probe would wait").expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"], "not_ready");
    }
}
