//! One error type for the HTTP boundary, and the one place that turns it into a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stockroom_store::{StoreError, error_body};

/// Everything a handler can fail with. Client mistakes carry their code and message; store failures are
/// classified once, here: transient ones are 503 (the sender retries), the rest 500, and neither says anything
/// internal in the body — the whole cause chain goes to the log.
#[derive(Debug)]
pub enum ApiError {
    Client { status: StatusCode, code: &'static str, message: String, details: Value },
    Store(StoreError),
    Timeout,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client { status, code, message: message.into(), details: json!({}) }
    }

    pub fn with_details(mut self, extra: Value) -> Self {
        if let Self::Client { details, .. } = &mut self {
            *details = extra;
        }
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Client { status, code, message, details } => {
                json_response(status, &error_body(code, &message, details))
            }
            Self::Timeout => {
                let body = error_body("timeout", "the request took too long; retry", json!({}));
                with_retry_after(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
            }
            // Not a fault: the command came before what it depends on. Say so, so that the sender knows why.
            Self::Store(StoreError::NotYet(why)) => {
                tracing::info!(reason = %why, "command deferred: not yet applicable");
                let body = error_body("not_yet", &format!("{why}; deliver it again later"), json!({}));
                with_retry_after(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
            }
            Self::Store(e) if e.is_transient() => {
                tracing::warn!(error = ?e, "store unavailable");
                let body = error_body("unavailable", "the ledger is unavailable right now; retry", json!({}));
                with_retry_after(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
            }
            Self::Store(e) => {
                tracing::error!(error = ?e, "store failure");
                let body = error_body("internal", "something went wrong on our side", json!({}));
                json_response(StatusCode::INTERNAL_SERVER_ERROR, &body)
            }
        }
    }
}

fn with_retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
