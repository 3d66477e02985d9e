//! Request bodies in, answers out. Bodies are read with a byte bound and parsed here so that every failure is
//! a JSON 4xx: axum's own `Json` rejection answers in plain text.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
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

/// Path parameters, as axum's `Path` reads them, but refused with a JSON 400 `invalid_path` (axum answers in
/// plain text), e.g. for `%FF`, which is no UTF-8.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
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
///
/// An object that names a key twice is `malformed_json` too: serde_json keeps the last value, while a proxy or a
/// validator in front of us may read the first, and the two would then disagree about what was asked.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let StrictJson(raw) = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    let value = T::deserialize(&raw).map_err(|e| ApiError::invalid("invalid_request", e.to_string()))?;
    Ok(JsonBody { value, raw })
}

/// JSON read into a `Value`, refusing duplicate object keys and reading `-0` as `0`. Written here because
/// serde_json has no switch for either: its `Value` keeps the last of duplicate keys, and it reads `-0` as the
/// float `-0.0`, which integer fields then refuse although they take `0`.
struct StrictJson(Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // `-0` (and `-0.0`) is zero.
        if v == 0.0 && v.is_sign_negative() {
            return Ok(Value::from(0));
        }
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("the key \"{key}\" appears twice in one object")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        quantity: i64,
    }

    fn code(e: ApiError) -> String {
        let response = e.into_response();
        format!("{}", response.status().as_u16())
    }

    #[test]
    fn a_key_named_twice_is_malformed_at_any_depth() {
        for body in [
            r#"{"quantity":1,"quantity":5}"#,
            r#"{"lines":[{"sku":"S","quantity":1,"quantity":5}]}"#,
            r#"[{"a":{"b":1,"b":1}}]"#,
        ] {
            let e = parse::<Value>(body.as_bytes()).err().unwrap_or_else(|| panic!("{body} was taken"));
            assert_eq!(code(e), "400", "{body}");
        }
        let twice = parse::<Line>(br#"{"quantity":1,"quantity":5}"#).err().map(code);
        assert_eq!(twice.as_deref(), Some("400"));
    }

    #[test]
    fn minus_zero_is_zero_and_other_numbers_keep_their_value() {
        let parsed = parse::<Line>(br#"{"quantity":-0}"#).map(|b| b.value.quantity).ok();
        assert_eq!(parsed, Some(0));
        let raw = parse::<Value>(br#"{"a":-0,"b":-0.0,"c":1.5,"d":-7,"e":18446744073709551615,"f":[true,null,"x"]}"#)
            .map(|b| b.raw)
            .ok();
        assert_eq!(raw, Some(json!({"a":0,"b":0,"c":1.5,"d":-7,"e":u64::MAX,"f":[true,null,"x"]})));
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_malformed_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse::<Value>(deep.as_bytes()).err().map(code).as_deref(), Some("400"));
    }
}
