//! The API's front door for the long-running piece (GKE has no Cloud Run IAM in front of it): with
//! `STOCKROOM_API_AUDIENCE` set, every `/v1` write and the `/v1/events/stream` feed need a Google-signed OIDC token
//! for that audience (and, if listed, one of `STOCKROOM_API_EMAILS`). Reads stay open, for the dashboard behind IAP
//! and the storefront. `/events`, `/pubsub/push` and `/jobs/*` keep their own guard (`STOCKROOM_OIDC_AUDIENCE`):
//! the callers differ (storefront back ends here, Pub/Sub and Scheduler there), and so do the audiences.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::oidc::{OidcVerifier, require_token};

/// The live feed: a read, but one that streams every movement of every SKU, so it is guarded like a write.
pub const STREAM_PATH: &str = "/v1/events/stream";

/// Whether a request to `path` with `method` needs the API token.
pub fn needs_token(method: &Method, path: &str) -> bool {
    let api = path.starts_with("/v1/");
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    api && (!read || path == STREAM_PATH)
}

/// `router` behind the API guard; unchanged when `verifier` is `None` (authentication off).
pub fn guard_api(router: Router, verifier: Option<Arc<OidcVerifier>>) -> Router {
    match verifier {
        None => router,
        Some(verifier) => router.layer(middleware::from_fn_with_state(Some(verifier), guard)),
    }
}

async fn guard(State(verifier): State<Option<Arc<OidcVerifier>>>, request: Request, next: Next) -> Response {
    if needs_token(request.method(), request.uri().path()) {
        require_token(State(verifier), request, next).await
    } else {
        next.run(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_under_v1_and_the_live_feed_need_the_token_and_reads_and_other_routes_do_not() {
        for (method, path) in [
            (Method::POST, "/v1/reservations"),
            (Method::POST, "/v1/reservations/r1/commit"),
            (Method::PUT, "/v1/locations/wh"),
            (Method::DELETE, "/v1/anything"),
            (Method::PATCH, "/v1/skus/S/policy"),
            (Method::GET, STREAM_PATH),
        ] {
            assert!(needs_token(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/stock/S"),
            (Method::HEAD, "/v1/stock/S"),
            (Method::OPTIONS, "/v1/reservations"),
            (Method::GET, "/v1/events/streaming"),
            (Method::POST, "/events"),
            (Method::POST, "/webhooks/shopify"),
            (Method::GET, "/healthz"),
            (Method::POST, "/v1"),
        ] {
            assert!(!needs_token(&method, path), "{method} {path}");
        }
    }
}
