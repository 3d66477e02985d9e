//! Request bodies in, answers out. Bodies are read with a byte bound and parsed here so that every failure is
//! a JSON 4xx: axum's own `Json` rejection answers in plain text.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use stockroom_store::Idempotency;

use crate::http::{ApiError, Fault, json_response};

/// Bytes a JSON body may have. Set per router with `axum::extract::DefaultBodyLimit`, which this extractor
/// honours; this is the fallback.
pub const BODY_BYTES_MAX: usize = 256 * 1024;

/// A JSON body: the parsed value and the raw JSON (for idempotency hashing).
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Value,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::new(
                    Fault::UnsupportedMedia,
                    "unsupported_media_type",
                    "send the body as application/json",
                ));
            }
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse(&bytes)
    }
}

/// The raw body, bounded by `DefaultBodyLimit`, with a JSON 413 when it is too large.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state).await.map(RawBody).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Fault::TooLarge, "body_too_large", "the request body is too large")
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })
    }
}

/// Parses a body: syntax errors (including nesting deeper than serde_json's recursion limit) are 400
/// `malformed_json`; well-formed JSON of the wrong shape is 422 `invalid_request`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let raw: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    let value = T::deserialize(&raw).map_err(|e| ApiError::invalid("invalid_request", e.to_string()))?;
    Ok(JsonBody { value, raw })
}

/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The request's idempotency key, if any, bound to a hash of what was asked, so that the same key with another
/// request is told apart. `scope` names what the key is for (`Idempotency-Key` header, or a reservation id).
pub fn idempotency(key: &str, method: &Method, path: &str, body: &Value) -> Result<Idempotency, ApiError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} printable ASCII characters"),
        ));
    }
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b" ");
    hash.update(path);
    hash.update(b"\n");
    // serde_json's maps are ordered, so this is a canonical form: key order and whitespace do not matter.
    hash.update(body.to_string());
    Ok(Idempotency { key: key.to_owned(), request_hash: hex::encode(hash.finalize()) })
}

/// The `Idempotency-Key` header, if present.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be printable ASCII")),
    }
}

/// A JSON 200 of any serialisable value.
pub fn ok<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => json_response(status, &v),
        Err(_) => ApiError::new(Fault::Internal, "internal", "could not encode the answer").into_response(),
    }
}
