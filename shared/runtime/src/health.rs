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

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

async fn readyz(State(store): State<Arc<dyn Ping>>) -> Response {
    match store.ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        Err(e) => {
            tracing::warn!(error = ?e, "not ready");
            ApiError::new(Fault::Unavailable, "not_ready", "the store is not reachable").into_response()
        }
    }
}

async fn metrics() -> Response {
    let body = crate::metrics::handle().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
