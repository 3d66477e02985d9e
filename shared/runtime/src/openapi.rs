//! What every operation of the OpenAPI description shares: the one error body, and the failures the shared
//! edges answer whatever the handler. Operations name these in their `responses(...)` as
//! `(status = 503, response = inline(Unavailable))`, each where its code can answer it:
//!
//! - 400 [`BadRequest`]: anything with a path parameter (`Path` refuses a segment that is not UTF-8), a query
//!   string, a header it reads, or a JSON body (malformed JSON);
//! - 413 [`TooLarge`]: anything that reads a body (`RawBody`, `JsonBody`);
//! - 415 [`UnsupportedMedia`]: bodies read by `JsonBody`, which takes only JSON media types;
//! - 503 [`Unavailable`]: every operation, since the request timeout of `with_edges` answers 503 to any
//!   request that outlives it, and a store that is unavailable is 503 too.
//!
//! Each names [`ErrorBody`] by reference: a document using them lists it in `components(schemas(ErrorBody))`.

use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

/// Every error answer: `{"error": "<snake_case_code>", "message": "...", ...details}`. Details depend on the
/// error (`shortfalls` for `insufficient_stock`, `reservation_id` for `unknown_reservation`, …).
#[derive(Debug, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a stable snake_case code.
    #[schema(pattern = "^[a-z0-9_]+$")]
    pub error: String,
    /// The same, in words.
    pub message: String,
}

/// A response carrying [`ErrorBody`] as JSON.
pub fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
}

macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), error_response($description).build().into())
                }
            }
        )+
    };
}

error_responses! {
    /// 400, as the shared extractors answer it.
    BadRequest => "The request cannot be read: JSON that does not parse (or names a key twice), a query string \
        or query parameter that does not parse or is out of range, a path that is not UTF-8, or a bad header \
        (`malformed_json`, `invalid_query`, `invalid_limit`, `invalid_path`, `invalid_idempotency_key`, …).";
    /// 413, as `RawBody` and `JsonBody` answer it.
    TooLarge => "The body is larger than `STOCKROOM_BODY_BYTES_MAX` (`body_too_large`).";
    /// 415, as `JsonBody` answers it.
    UnsupportedMedia => "The body is not declared as JSON (`unsupported_media_type`).";
}

/// 503 with `Retry-After`: the store is unavailable, the same command or key is still being applied, or the
/// request outlived `STOCKROOM_REQUEST_TIMEOUT_MS`. Nothing was applied; send it again.
pub struct Unavailable;

impl<'r> utoipa::ToResponse<'r> for Unavailable {
    fn response() -> (&'r str, RefOr<Response>) {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        let retry_after = HeaderBuilder::new()
            .schema(Some(seconds))
            .description(Some("Seconds to wait before sending the request again."))
            .build();
        let response = error_response(
            "Not now: the store is unavailable, the same command is still being applied, or the request ran out \
             of time (`unavailable`, `in_progress`, `not_yet`, `timeout`). Nothing was applied: send it again after \
             `Retry-After` seconds.",
        )
        .header("Retry-After", retry_after);
        ("Unavailable", response.build().into())
    }
}

/// 401 from [`crate::oidc::require_token`]: on `/events`, `/pubsub/push` and `/jobs/*` when
/// `STOCKROOM_OIDC_AUDIENCE` is set, and on `/v1` writes and the live feed when `STOCKROOM_API_AUDIENCE` is
/// ([`crate::access`]).
pub struct Unauthenticated;

impl<'r> utoipa::ToResponse<'r> for Unauthenticated {
    fn response() -> (&'r str, RefOr<Response>) {
        let challenge = HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some("`Bearer error=\"invalid_token\"`"))
            .build();
        let response = error_response(
            "Only when authentication is on (`STOCKROOM_OIDC_AUDIENCE` for `/events`, `/pubsub/push` and `/jobs/*`; \
             `STOCKROOM_API_AUDIENCE` for `/v1` writes and the live feed): no valid Google-signed OIDC token for the \
             configured audience and accounts (`unauthorized`, with the `reason`). Nothing was applied.",
        )
        .header("WWW-Authenticate", challenge);
        ("Unauthenticated", response.build().into())
    }
}

/// A string without control characters (U+0000-U+001F, U+007F-U+009F), as every CloudEvents attribute must be.
const NO_CONTROLS: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// Base64 as `events::decode_base64` takes it: the standard or the URL-safe alphabet (not both), padded or not,
/// with no stray bits in the last symbol.
const BASE64: &str = "^(([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw](==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?)?\
                      |([A-Za-z0-9_-]{4})*([A-Za-z0-9_-][AQgw](==)?|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]=?)?)$";

/// RFC 3339 as `chrono::DateTime::parse_from_rfc3339` takes it: a real calendar date (years 0000 to 9999), `T`, `t`
/// or a space, a leap second allowed, any number of fraction digits, `Z`/`z` or an offset up to ±23:59 (chrono
/// also takes U+2212 for its minus).
const DATE_TIME: &str = "^([0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|[0-9]{4}-(0[13-9]|1[0-2])-(29|30)\
                         |[0-9]{4}-(0[13578]|1[02])-31|([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)\
                         [Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[-+\u{2212}]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// A time as Stockroom reads one: RFC 3339 (`DATE_TIME`).
pub struct Rfc3339;

impl utoipa::PartialSchema for Rfc3339 {
    fn schema() -> RefOr<Schema> {
        time(SchemaType::new(Type::String)).into()
    }
}

impl utoipa::ToSchema for Rfc3339 {}

/// No `format: date-time`: JSON Schema's date-time refuses the space that RFC 3339 lets stand for `T` (and chrono
/// takes), so the pattern alone says what is taken.
fn time(ty: SchemaType) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(ty).pattern(Some(DATE_TIME)).description(Some(
        "RFC 3339, e.g. `2026-12-01T09:30:00Z` or `2026-12-01T10:30:00.5+01:00` (a space may stand for the `T`)",
    ))
}

fn types(types: &[Type]) -> SchemaType {
    SchemaType::Array(types.to_vec())
}

/// A CloudEvents attribute: a string without control characters, `min_length` or more characters long; or null
/// (absent) when `nullable`.
fn attribute(min_length: usize, nullable: bool) -> ObjectBuilder {
    let ty = if nullable { types(&[Type::String, Type::Null]) } else { SchemaType::new(Type::String) };
    ObjectBuilder::new().schema_type(ty).min_length(Some(min_length)).pattern(Some(NO_CONTROLS))
}

/// `not`, which utoipa's builders lack: an extension member is written as a member of the schema object.
fn not(schema: serde_json::Value) -> Option<Extensions> {
    Some([("not", schema)].into_iter().collect())
}

/// A structured-mode CloudEvent (`application/cloudevents+json`), as `events::parse_cloudevents` takes it.
pub struct CloudEvent;

impl utoipa::PartialSchema for CloudEvent {
    fn schema() -> RefOr<Schema> {
        let any = ObjectBuilder::new().schema_type(SchemaType::AnyValue);
        // Extensions: lower-case letters and digits only; a string (without control characters), number or
        // boolean; null means absent.
        let extension = ObjectBuilder::new()
            .schema_type(types(&[Type::String, Type::Number, Type::Boolean, Type::Null]))
            .pattern(Some(NO_CONTROLS));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A CloudEvent 1.0 in the JSON event format. `data` is the command (or event) itself; binary-mode \
                 data goes in `data_base64` instead, never both. Other members are extension attributes.",
            ))
            .property("specversion", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["1.0"])))
            .property("id", attribute(1, false))
            .property("source", attribute(1, false))
            .property("type", attribute(1, false).description(Some("The command or event type.")))
            .property("subject", attribute(1, true))
            .property("time", time(types(&[Type::String, Type::Null])))
            .property("datacontenttype", attribute(1, true))
            .property("dataschema", attribute(1, true))
            .property("data", any)
            .property(
                "data_base64",
                ObjectBuilder::new()
                    .schema_type(types(&[Type::String, Type::Null]))
                    .content_encoding("base64")
                    .pattern(Some(BASE64)),
            )
            .required("specversion")
            .required("id")
            .required("source")
            .required("type")
            .property_names(Some(
                ObjectBuilder::new().schema_type(Type::String).pattern(Some("^([a-z0-9]+|data_base64)$")),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(extension.into()))))
            .extensions(not(json!({
                "required": ["data", "data_base64"],
                "properties": { "data": { "not": { "type": "null" } }, "data_base64": { "type": "string" } }
            })))
            .into()
    }
}

impl utoipa::ToSchema for CloudEvent {}

/// A Pub/Sub push request (`events::parse_push`), as Pub/Sub sends it: proto3 JSON, camelCase (the original
/// snake_case names are taken too).
pub struct PushEnvelope;

impl utoipa::PartialSchema for PushEnvelope {
    fn schema() -> RefOr<Schema> {
        let nullable = |ty: Type| ObjectBuilder::new().schema_type(types(&[ty, Type::Null]));
        let message = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "data",
                nullable(Type::String)
                    .content_encoding("base64")
                    .pattern(Some(BASE64))
                    .description(Some("The command: a structured CloudEvent, or the data of one whose attributes are `ce-*` message attributes; base64.")),
            )
            .property(
                "attributes",
                nullable(Type::Object).additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
                    ObjectBuilder::new().schema_type(Type::String).into(),
                )))),
            )
            .property("messageId", ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)))
            .property("publishTime", time(types(&[Type::String, Type::Null])))
            .property("orderingKey", nullable(Type::String))
            .required("messageId");
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "`{\"message\": {...}, \"subscription\": \"projects/P/subscriptions/S\", \"deliveryAttempt\": n}`",
            ))
            .property("message", message)
            .property("subscription", nullable(Type::String))
            .property("deliveryAttempt", nullable(Type::Integer).minimum(Some(0)).maximum(Some(u32::MAX)))
            .required("message")
            .into()
    }
}

impl utoipa::ToSchema for PushEnvelope {}

/// The routes every function serves from here: the event stream, health and metrics.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::stream::stream, crate::health::healthz, crate::health::readyz, crate::health::metrics),
    components(schemas(ErrorBody, CloudEvent, PushEnvelope, Rfc3339, crate::stream::StreamEvent)),
    tags((name = "operations", description = "Health, readiness, metrics and this description"),
         (name = "events", description = "Events in and out"))
)]
pub struct ApiDoc;
