//! Events in: the CloudEvents 1.0 HTTP protocol binding (binary, structured and batched modes), the Pub/Sub push
//! envelope, and the two Eventarc payloads Stockroom consumes (a Pub/Sub message published, a Cloud Storage
//! object finalized). Everything here is a pure function of headers and bytes; the handlers stay thin, and every
//! rule is tested against the upstream fixtures in `../shared/fixtures`.
//!
//! Why the binding is parsed here and not by cloudevents-sdk 0.9's `Event` extractor: that extractor reads the
//! body with no size bound, hands `ce-` header values over without percent-decoding them, recognises structured
//! mode only when Content-Type starts with the exact bytes `application/cloudevents+json`, takes a
//! `ce-datacontenttype` header as an attribute, accepts empty `id`, `source` and `type`, any extension name and
//! spec version 0.3, knows no batched mode, and re-renders `time` through chrono. Each place below that decides
//! otherwise names cloudevents-sdk in a comment.
//!
//! Bodies reach these functions already bounded: handlers read them with [`crate::RawBody`], which honours
//! `DefaultBodyLimit` and answers 413 past it (cloudevents-sdk's extractor calls `to_bytes(body, usize::MAX)`).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::http::{ApiError, Fault};

/// The only CloudEvents spec version accepted.
pub const SPEC_VERSION: &str = "1.0";
/// The Eventarc type of a Pub/Sub message published to a topic.
pub const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";
/// The Eventarc type of a Cloud Storage object created or overwritten.
pub const OBJECT_FINALIZED: &str = "google.cloud.storage.object.v1.finalized";
/// Every Cloud Storage object event type (`finalized`, `deleted`, `archived`, `metadataUpdated`) starts so and
/// carries the same `StorageObjectData`.
const STORAGE_OBJECT_TYPES: &str = "google.cloud.storage.object.v1.";

/// One CloudEvent as received. `data` is the raw bytes of the data (binary mode: the body; structured: the
/// `data` member re-serialised, or `data_base64` decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    /// As sent (RFC 3339, checked), not re-rendered: `2018-04-05T03:56:24Z` stays so.
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// Extension attributes by name. Structured mode's JSON numbers and booleans are kept as their JSON text.
    pub extensions: BTreeMap<String, String>,
    pub data: Option<Bytes>,
}

impl IncomingEvent {
    /// The data as JSON, for events whose `datacontenttype` is absent or a JSON media type.
    pub fn data_json(&self, what: &'static str) -> Result<Value, EventError> {
        if let Some(content_type) = &self.datacontenttype
            && !is_json_media_type(content_type)
        {
            return Err(EventError::MalformedData { what, reason: format!("its content type is {content_type:?}") });
        }
        let data = self.data.as_ref().ok_or(EventError::MissingData)?;
        serde_json::from_slice(data).map_err(|e| EventError::MalformedData { what, reason: e.to_string() })
    }
}

/// Why an event was not taken. Each has a snake_case [`code`](Self::code), a message (its `Display`) and an
/// HTTP [`status`](Self::status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the CloudEvent has no `{0}`: it is required and must not be empty")]
    MissingAttribute(&'static str),
    #[error("specversion {0:?} is not supported: only \"1.0\" is")]
    UnsupportedSpecVersion(String),
    #[error("the `{name}` attribute is invalid: {reason}")]
    InvalidAttribute { name: String, reason: String },
    #[error("{0:?} is not a valid extension name: lowercase letters a-z and digits 0-9 only, and not `data`")]
    InvalidAttributeName(String),
    #[error("the `{0}` attribute is given more than once")]
    DuplicateAttribute(String),
    #[error("in binary mode `datacontenttype` is the Content-Type header; a ce-datacontenttype header is not allowed")]
    DataContentTypeHeader,
    #[error("a structured CloudEvent carries `data` or `data_base64`, not both")]
    DataAndDataBase64,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is not a CloudEvent: {0}")]
    MalformedEvent(String),
    #[error("the Content-Type header is unusable: {0}")]
    InvalidContentType(String),
    #[error("batched CloudEvents (application/cloudevents-batch+json) are not accepted here; send one event a request")]
    BatchNotAccepted,
    #[error("the event format {0:?} is not supported: send application/cloudevents+json, or use binary mode")]
    UnsupportedEventFormat(String),
    #[error("the event has no data")]
    MissingData,
    #[error("{what} is malformed: {reason}")]
    MalformedData { what: &'static str, reason: String },
    #[error("the Pub/Sub message data is not valid base64: {0}")]
    InvalidMessageData(String),
    #[error("the Pub/Sub message has no messageId")]
    MissingMessageId,
    #[error("`{camel}` and `{snake}` are both given and disagree")]
    ConflictingFields { camel: &'static str, snake: &'static str },
    #[error("expected a {expected} event, got type {got:?}")]
    UnexpectedEventType { expected: &'static str, got: String },
    #[error("legacy event type {0:?} is not converted: only Pub/Sub publish and Cloud Storage object events are")]
    UnsupportedLegacyEvent(String),
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAttribute(_) => "missing_attribute",
            Self::UnsupportedSpecVersion(_) => "unsupported_specversion",
            Self::InvalidAttribute { .. } => "invalid_attribute",
            Self::InvalidAttributeName(_) => "invalid_attribute_name",
            Self::DuplicateAttribute(_) => "duplicate_attribute",
            Self::DataContentTypeHeader => "datacontenttype_header",
            Self::DataAndDataBase64 => "data_and_data_base64",
            Self::MalformedJson(_) => "malformed_json",
            Self::MalformedEvent(_) => "malformed_event",
            Self::InvalidContentType(_) => "invalid_content_type",
            Self::BatchNotAccepted => "batch_not_accepted",
            Self::UnsupportedEventFormat(_) => "unsupported_event_format",
            Self::MissingData => "missing_data",
            Self::MalformedData { .. } => "malformed_data",
            Self::InvalidMessageData(_) => "invalid_message_data",
            Self::MissingMessageId => "missing_message_id",
            Self::ConflictingFields { .. } => "conflicting_fields",
            Self::UnexpectedEventType { .. } => "unexpected_event_type",
            Self::UnsupportedLegacyEvent(_) => "unsupported_legacy_event",
        }
    }

    /// Malformed (not a valid CloudEvent, push envelope or event payload), except:
    /// - an unsupported media type for a batch where batches are not accepted, or an event format other than
    ///   JSON: the request may be a perfectly valid CloudEvent, in a media type this endpoint does not take;
    /// - invalid for a valid event of a type the caller cannot handle ("valid event, invalid command").
    pub fn fault(&self) -> Fault {
        match self {
            Self::BatchNotAccepted | Self::UnsupportedEventFormat(_) => Fault::UnsupportedMedia,
            Self::UnexpectedEventType { .. } => Fault::Invalid,
            _ => Fault::Malformed,
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        ApiError::new(e.fault(), e.code(), e.to_string())
    }
}

/// CloudEvents HTTP binding: binary or structured mode chosen by Content-Type; batch mode
/// (application/cloudevents-batch+json) refused unless allow_batch.
///
/// `body` must already be bounded by the caller, with [`crate::RawBody`]: cloudevents-sdk's axum extractor reads
/// the whole body whatever its size.
pub fn parse_cloudevents(
    headers: &HeaderMap,
    body: &[u8],
    allow_batch: bool,
) -> Result<Vec<IncomingEvent>, EventError> {
    match mode_of(headers)? {
        Mode::Binary(content_type) => Ok(vec![binary_event(headers, content_type, body)?]),
        Mode::Structured => Ok(vec![structured_event(json_body(body)?)?]),
        // cloudevents-sdk has no batched mode: such a request is an error of unknown encoding there.
        Mode::Batch if !allow_batch => Err(EventError::BatchNotAccepted),
        Mode::Batch => match json_body(body)? {
            Value::Array(events) => events.into_iter().map(structured_event).collect(),
            _ => Err(EventError::MalformedEvent("a batch of CloudEvents is a JSON array".into())),
        },
    }
}

enum Mode {
    /// With the Content-Type, which is the event's `datacontenttype`.
    Binary(Option<String>),
    Structured,
    Batch,
}

/// The binding's mode, from the Content-Type's media type: `application/cloudevents-batch...` is batched,
/// `application/cloudevents...` structured, anything else (or no Content-Type) binary.
fn mode_of(headers: &HeaderMap) -> Result<Mode, EventError> {
    let mut content_types = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(content_type) = content_types.next() else {
        return Ok(Mode::Binary(None));
    };
    if content_types.next().is_some() {
        return Err(EventError::InvalidContentType("it is given more than once".into()));
    }
    let content_type = content_type
        .to_str()
        .map_err(|_| EventError::InvalidContentType("it is not printable ASCII".into()))?
        .to_owned();
    // cloudevents-sdk tests `content_type.starts_with("application/cloudevents+json")` on the raw header, so
    // `Application/CloudEvents+JSON` falls through to binary mode there. Media types are case-insensitive
    // (RFC 9110 8.3.1): compare the type/subtype lowercased, with its parameters (charset) set aside.
    let essence = media_type_essence(&content_type);
    Ok(if essence == "application/cloudevents-batch+json" {
        Mode::Batch
    } else if essence == "application/cloudevents+json" {
        Mode::Structured
    } else if essence.starts_with("application/cloudevents") {
        return Err(EventError::UnsupportedEventFormat(essence));
    } else {
        Mode::Binary(Some(content_type))
    })
}

/// `type/subtype` of a media type, lowercased, without parameters.
fn media_type_essence(media_type: &str) -> String {
    media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a media type says JSON (`application/json`, `text/json`, or any `+json` suffix).
pub fn is_json_media_type(media_type: &str) -> bool {
    let essence = media_type_essence(media_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn json_body(body: &[u8]) -> Result<Value, EventError> {
    serde_json::from_slice(body).map_err(|e| EventError::MalformedJson(e.to_string()))
}

/// Binary mode: attributes from `ce-` headers, `datacontenttype` from Content-Type, the body is the data.
fn binary_event(headers: &HeaderMap, content_type: Option<String>, body: &[u8]) -> Result<IncomingEvent, EventError> {
    let mut draft = Draft::default();
    // http's HeaderMap stores names lowercased, so `CE-ID`, `Ce-Id` and `ce-id` are one header here, as the
    // binding wants; its iterator yields every value of a repeated header, which `set` refuses.
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else { continue };
        if attribute == "datacontenttype" {
            // cloudevents-sdk takes this header as the attribute (then overwrites it from Content-Type); the
            // binding (3.1.1) says Content-Type carries it, so a second source is refused rather than guessed.
            return Err(EventError::DataContentTypeHeader);
        }
        draft.set(attribute, percent_decoded(attribute, value)?)?;
    }
    draft.datacontenttype = content_type;
    draft.data = (!body.is_empty()).then(|| Bytes::copy_from_slice(body));
    draft.finish()
}

/// A `ce-` header value: RFC 3986 `%XX` escapes decoded, the result UTF-8 (binding 3.1.3.2).
///
/// cloudevents-sdk does not percent-decode: `ce-source: %2Fmycontext%2Fsub` stays `%2Fmycontext%2Fsub` there.
fn percent_decoded(attribute: &str, value: &HeaderValue) -> Result<String, EventError> {
    let invalid = |reason: &str| EventError::InvalidAttribute { name: attribute.to_owned(), reason: reason.into() };
    let mut decoded = Vec::with_capacity(value.len());
    let mut bytes = value.as_bytes().iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(|&b| hex_digit(b));
            let low = bytes.next().and_then(|&b| hex_digit(b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(invalid("a `%` must be followed by two hexadecimal digits"));
            };
            decoded.push(high << 4 | low);
        } else {
            decoded.push(byte);
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid("its percent-decoded value is not UTF-8"))
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).and_then(|digit| u8::try_from(digit).ok())
}

/// Structured mode (and each member of a batch): one JSON object in the JSON event format.
fn structured_event(event: Value) -> Result<IncomingEvent, EventError> {
    let Value::Object(mut members) = event else {
        return Err(EventError::MalformedEvent("a structured CloudEvent is a JSON object".into()));
    };
    let data = members.remove("data").filter(|value| !value.is_null());
    let data_base64 = members.remove("data_base64").filter(|value| !value.is_null());
    let mut draft = Draft::default();
    for (name, value) in members {
        let text = match value {
            // The JSON event format: an attribute whose value is null is absent.
            Value::Null => continue,
            Value::String(text) => text,
            Value::Bool(_) | Value::Number(_) if !Draft::is_context_attribute(&name) => value.to_string(),
            other => {
                let reason = format!("it must be a string, not {}", json_kind(&other));
                return Err(EventError::InvalidAttribute { name, reason });
            }
        };
        draft.set(&name, text)?;
    }
    draft.data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(EventError::DataAndDataBase64),
        (None, None) => None,
        // The JSON event format: with a non-JSON datacontenttype, a string `data` is the data itself (text/plain,
        // application/xml, ...); otherwise `data` is a JSON value, kept as its JSON text.
        (Some(Value::String(text)), None)
            if draft.datacontenttype.as_deref().is_some_and(|t| !is_json_media_type(t)) =>
        {
            Some(Bytes::from(text.into_bytes()))
        }
        (Some(value), None) => Some(Bytes::from(
            serde_json::to_vec(&value).map_err(|e| EventError::MalformedEvent(format!("its data: {e}")))?,
        )),
        (None, Some(Value::String(encoded))) => Some(decode_base64(&encoded).map_err(|e| {
            EventError::InvalidAttribute { name: "data_base64".into(), reason: format!("it is not base64: {e}") }
        })?),
        (None, Some(other)) => {
            let reason = format!("it must be a base64 string, not {}", json_kind(&other));
            return Err(EventError::InvalidAttribute { name: "data_base64".into(), reason });
        }
    };
    draft.finish()
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Standard or URL-safe base64, padded or not: what proto3 JSON accepts for `bytes`, and what the JSON event
/// format's `data_base64` carries.
fn decode_base64(encoded: &str) -> Result<Bytes, base64::DecodeError> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let engine = if encoded.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
    engine.decode(encoded).map(Bytes::from)
}

/// An event's attributes as they are gathered, before the checks every mode shares.
#[derive(Default)]
struct Draft {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    extensions: BTreeMap<String, String>,
    data: Option<Bytes>,
}

impl Draft {
    fn is_context_attribute(name: &str) -> bool {
        matches!(name, "specversion" | "id" | "source" | "type" | "subject" | "time" | "datacontenttype" | "dataschema")
    }

    fn set(&mut self, name: &str, value: String) -> Result<(), EventError> {
        let slot = match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "subject" => &mut self.subject,
            "time" => &mut self.time,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            _ => {
                // cloudevents-sdk takes any extension name. Names are lowercase a-z and 0-9 (core spec, naming);
                // "SHOULD NOT exceed 20 characters" is advice to producers, so longer names are accepted.
                let well_formed =
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !well_formed || name == "data" {
                    return Err(EventError::InvalidAttributeName(name.to_owned()));
                }
                if self.extensions.insert(name.to_owned(), value).is_some() {
                    return Err(EventError::DuplicateAttribute(name.to_owned()));
                }
                return Ok(());
            }
        };
        if slot.replace(value).is_some() {
            return Err(EventError::DuplicateAttribute(name.to_owned()));
        }
        Ok(())
    }

    fn finish(self) -> Result<IncomingEvent, EventError> {
        // cloudevents-sdk also accepts spec version 0.3, and empty id, source and type.
        let specversion = required("specversion", self.specversion)?;
        if specversion != SPEC_VERSION {
            return Err(EventError::UnsupportedSpecVersion(specversion));
        }
        let event = IncomingEvent {
            specversion,
            id: required("id", self.id)?,
            source: required("source", self.source)?,
            ty: required("type", self.ty)?,
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            extensions: self.extensions,
            data: self.data,
        };
        for (name, value) in [
            ("subject", &event.subject),
            ("time", &event.time),
            ("datacontenttype", &event.datacontenttype),
            ("dataschema", &event.dataschema),
        ] {
            if value.as_ref().is_some_and(String::is_empty) {
                return Err(invalid_attribute(name, "when present it must not be empty"));
            }
        }
        if let Some(time) = &event.time {
            // Checked, and kept as sent: cloudevents-sdk turns it into a `DateTime<Utc>`, losing the sender's offset
            // and spelling (`03:56:24.1+02:00` comes back as `01:56:24.100Z`).
            chrono::DateTime::parse_from_rfc3339(time)
                .map_err(|e| invalid_attribute("time", &format!("{time:?} is not an RFC 3339 timestamp: {e}")))?;
        }
        let attributes = [
            ("id", Some(&event.id)),
            ("source", Some(&event.source)),
            ("type", Some(&event.ty)),
            ("subject", event.subject.as_ref()),
            ("datacontenttype", event.datacontenttype.as_ref()),
            ("dataschema", event.dataschema.as_ref()),
        ];
        let extensions = event.extensions.iter().map(|(name, value)| (name.as_str(), Some(value)));
        for (name, value) in attributes.into_iter().chain(extensions) {
            // Core spec, type system: a String MUST NOT contain control characters U+0000-U+001F, U+007F-U+009F.
            if value.is_some_and(|value| value.chars().any(char::is_control)) {
                return Err(invalid_attribute(name, "it contains a control character"));
            }
        }
        Ok(event)
    }
}

fn required(name: &'static str, value: Option<String>) -> Result<String, EventError> {
    value.filter(|value| !value.is_empty()).ok_or(EventError::MissingAttribute(name))
}

fn invalid_attribute(name: &str, reason: &str) -> EventError {
    EventError::InvalidAttribute { name: name.to_owned(), reason: reason.to_owned() }
}

/// A Pub/Sub message as pushed, from the envelope
/// `{"message":{"data","attributes","messageId"|"message_id","publishTime"|"publish_time","orderingKey"?},
/// "subscription","deliveryAttempt"?}`, or from an Eventarc `MessagePublishedData` (which has no delivery attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub message_id: String,
    pub publish_time: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// The message's data, base64-decoded; empty when the message has none.
    pub data: Bytes,
    /// `None` when absent or empty.
    pub ordering_key: Option<String>,
    pub subscription: Option<String>,
    pub delivery_attempt: Option<u32>,
}

/// A Pub/Sub push request's body.
pub fn parse_push(body: &[u8]) -> Result<PushMessage, EventError> {
    pubsub_message(json_body(body)?, "the Pub/Sub push envelope")
}

/// Eventarc `google.cloud.pubsub.topic.v1.messagePublished`: the Pub/Sub message inside the event's data
/// (`MessagePublishedData`, the same shape as a push envelope).
pub fn message_published(event: &IncomingEvent) -> Result<PushMessage, EventError> {
    if event.ty != MESSAGE_PUBLISHED {
        return Err(EventError::UnexpectedEventType { expected: MESSAGE_PUBLISHED, got: event.ty.clone() });
    }
    const WHAT: &str = "the messagePublished data";
    pubsub_message(event.data_json(WHAT)?, WHAT)
}

/// The envelope `{message, subscription, deliveryAttempt?}` shared by push and `MessagePublishedData`.
/// Message fields may come under their proto3 JSON (camelCase) or original (snake_case) names, or both.
fn pubsub_message(envelope: Value, what: &'static str) -> Result<PushMessage, EventError> {
    let malformed = |reason: &str| EventError::MalformedData { what, reason: reason.to_owned() };
    let Value::Object(envelope) = envelope else { return Err(malformed("it must be a JSON object")) };
    let message = match envelope.get("message") {
        Some(Value::Object(message)) => message,
        Some(_) => return Err(malformed("`message` must be an object")),
        None => return Err(malformed("it has no `message`")),
    };
    let message_id = proto_text(message, "messageId", "message_id", what)?
        .filter(|id| !id.is_empty())
        .ok_or(EventError::MissingMessageId)?;
    let publish_time = proto_text(message, "publishTime", "publish_time", what)?;
    if let Some(time) = &publish_time {
        chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|e| malformed(&format!("publishTime {time:?} is not an RFC 3339 timestamp: {e}")))?;
    }
    let attributes = match message.get("attributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(attributes)) => attributes
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                _ => Err(malformed(&format!("attribute {key:?} must be a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("`attributes` must be an object of strings")),
    };
    let data = match message.get("data") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(encoded)) => {
            decode_base64(encoded).map_err(|e| EventError::InvalidMessageData(e.to_string()))?
        }
        Some(other) => return Err(EventError::InvalidMessageData(format!("it is {}, not a string", json_kind(other)))),
    };
    let ordering_key = proto_text(message, "orderingKey", "ordering_key", what)?.filter(|key| !key.is_empty());
    let subscription = proto_text(&envelope, "subscription", "subscription", what)?;
    let delivery_attempt = match proto_field(&envelope, "deliveryAttempt", "delivery_attempt")? {
        None => None,
        Some(attempt) => Some(whole_u32(attempt).ok_or_else(|| malformed("deliveryAttempt must be a whole number"))?),
    };
    Ok(PushMessage { message_id, publish_time, attributes, data, ordering_key, subscription, delivery_attempt })
}

/// A JSON number, or a string of digits, that fits in a u32.
fn whole_u32(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(n) => n.parse().ok(),
        _ => None,
    }
}

/// A field proto3 JSON lets arrive as camelCase, as the original snake_case name, or (Pub/Sub push does this)
/// both; both must then agree. Null counts as absent.
fn proto_field<'a>(
    object: &'a Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
) -> Result<Option<&'a Value>, EventError> {
    let present = |name| object.get(name).filter(|value: &&Value| !value.is_null());
    match (present(camel), present(snake)) {
        (Some(a), Some(b)) if a != b => Err(EventError::ConflictingFields { camel, snake }),
        (a, b) => Ok(a.or(b)),
    }
}

fn proto_text(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    what: &'static str,
) -> Result<Option<String>, EventError> {
    match proto_field(object, camel, snake)? {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(EventError::MalformedData { what, reason: format!("`{camel}` is {}", json_kind(other)) }),
    }
}

/// A proto3 int64: a JSON string of digits or a JSON number, kept as the decimal string.
fn proto_int64(
    object: &Map<String, Value>,
    camel: &'static str,
    snake: &'static str,
    what: &'static str,
) -> Result<Option<String>, EventError> {
    let malformed = || EventError::MalformedData { what, reason: format!("`{camel}` must be a whole number") };
    match proto_field(object, camel, snake)? {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::String(text)) if text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok() => {
            Ok(Some(text.clone()))
        }
        Some(_) => Err(malformed()),
    }
}

/// Eventarc `google.cloud.storage.object.v1.finalized`: the object reference. The int64 fields (`generation`,
/// `metageneration`, `size`) may come as JSON strings or numbers; they are kept as their decimal strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageObject {
    pub bucket: String,
    pub name: String,
    pub generation: String,
    pub metageneration: Option<String>,
    pub size: Option<String>,
    pub content_type: Option<String>,
    pub md5_hash: Option<String>,
    pub crc32c: Option<String>,
    pub time_created: Option<String>,
    pub updated: Option<String>,
}

/// The `StorageObjectData` of a Cloud Storage object event. Every `google.cloud.storage.object.v1.*` type carries
/// it; which of them to act on is the caller's choice (counts files: [`OBJECT_FINALIZED`]).
pub fn storage_object(event: &IncomingEvent) -> Result<StorageObject, EventError> {
    if !event.ty.starts_with(STORAGE_OBJECT_TYPES) {
        return Err(EventError::UnexpectedEventType { expected: OBJECT_FINALIZED, got: event.ty.clone() });
    }
    const WHAT: &str = "the storage object data";
    let Value::Object(object) = event.data_json(WHAT)? else {
        return Err(EventError::MalformedData { what: WHAT, reason: "it must be a JSON object".into() });
    };
    let text = |camel, snake| proto_text(&object, camel, snake, WHAT);
    let int64 = |camel, snake| proto_int64(&object, camel, snake, WHAT);
    let needed = |value: Option<String>, field: &str| {
        value
            .filter(|value| !value.is_empty())
            .ok_or_else(|| EventError::MalformedData { what: WHAT, reason: format!("it has no `{field}`") })
    };
    Ok(StorageObject {
        bucket: needed(text("bucket", "bucket")?, "bucket")?,
        name: needed(text("name", "name")?, "name")?,
        generation: needed(int64("generation", "generation")?, "generation")?,
        metageneration: int64("metageneration", "metageneration")?,
        size: int64("size", "size")?,
        content_type: text("contentType", "content_type")?,
        md5_hash: text("md5Hash", "md5_hash")?,
        crc32c: text("crc32c", "crc32c")?,
        time_created: text("timeCreated", "time_created")?,
        updated: text("updated", "updated")?,
    })
}

/// A background-function event — `{"context": {eventId, timestamp, eventType, resource}, "data"}`, or the older
/// flat `{eventId, timestamp, eventType, resource, data}` — turned into the CloudEvent the Functions Framework
/// makes of it. Only Pub/Sub publish and Cloud Storage object events are converted:
/// - Pub/Sub: type `google.cloud.pubsub.topic.v1.messagePublished`, source `//pubsub.googleapis.com/<resource>`,
///   data `{"message": <the legacy data with messageId = eventId and publishTime = timestamp>}`;
/// - Storage: type `google.cloud.storage.object.v1.<finalized|deleted|archived|metadataUpdated>`, source
///   `//storage.googleapis.com/projects/_/buckets/<bucket>`, subject `objects/<name>`, data unchanged.
pub fn legacy_event(body: &[u8]) -> Result<IncomingEvent, EventError> {
    const WHAT: &str = "the legacy event";
    let malformed = |reason: &str| EventError::MalformedData { what: WHAT, reason: reason.to_owned() };
    let Value::Object(mut event) = json_body(body)? else { return Err(malformed("it must be a JSON object")) };
    let data = event.remove("data").unwrap_or(Value::Null);
    let context = match event.remove("context") {
        Some(Value::Object(context)) => context,
        Some(_) => return Err(malformed("`context` must be an object")),
        None => event,
    };
    let text = |name: &'static str| proto_text(&context, name, name, WHAT);
    let event_id = text("eventId")?.ok_or_else(|| malformed("it has no eventId"))?;
    let timestamp = text("timestamp")?;
    let event_type = text("eventType")?.ok_or_else(|| malformed("it has no eventType"))?;
    let (service, resource) = match context.get("resource") {
        Some(Value::String(name)) => (None, name.clone()),
        Some(Value::Object(resource)) => (
            proto_text(resource, "service", "service", WHAT)?,
            proto_text(resource, "name", "name", WHAT)?.ok_or_else(|| malformed("its resource has no name"))?,
        ),
        _ => return Err(malformed("it has no resource")),
    };
    let mut draft = Draft {
        specversion: Some(SPEC_VERSION.to_owned()),
        id: Some(event_id.clone()),
        time: timestamp.clone(),
        datacontenttype: Some("application/json".to_owned()),
        ..Draft::default()
    };
    let data = match legacy_kind(&event_type)? {
        LegacyKind::Publish => {
            let service = service.unwrap_or_else(|| "pubsub.googleapis.com".to_owned());
            draft.ty = Some(MESSAGE_PUBLISHED.to_owned());
            draft.source = Some(format!("//{service}/{resource}"));
            let mut message = match data {
                Value::Object(message) => message,
                Value::Null => Map::new(),
                _ => return Err(malformed("the data of a Pub/Sub event must be an object")),
            };
            message.entry("messageId").or_insert(Value::String(event_id));
            if let Some(timestamp) = timestamp {
                message.entry("publishTime").or_insert(Value::String(timestamp));
            }
            json!({ "message": message })
        }
        LegacyKind::Storage(ce_type) => {
            let service = service.unwrap_or_else(|| "storage.googleapis.com".to_owned());
            draft.ty = Some(ce_type.to_owned());
            // Bucket names have no `/`, so the first `/objects/` ends the bucket's path.
            match resource.split_once("/objects/") {
                Some((bucket, object)) => {
                    draft.source = Some(format!("//{service}/{bucket}"));
                    draft.subject = Some(format!("objects/{object}"));
                }
                None => draft.source = Some(format!("//{service}/{resource}")),
            }
            data
        }
    };
    let data = serde_json::to_vec(&data).map_err(|e| malformed(&e.to_string()))?;
    draft.data = Some(Bytes::from(data));
    draft.finish()
}

enum LegacyKind {
    Publish,
    /// With the CloudEvent type.
    Storage(&'static str),
}

fn legacy_kind(event_type: &str) -> Result<LegacyKind, EventError> {
    Ok(match event_type {
        "google.pubsub.topic.publish" | "providers/cloud.pubsub/eventTypes/topic.publish" => LegacyKind::Publish,
        "google.storage.object.finalize" | "providers/cloud.storage/eventTypes/object.change" => {
            LegacyKind::Storage(OBJECT_FINALIZED)
        }
        "google.storage.object.delete" => LegacyKind::Storage("google.cloud.storage.object.v1.deleted"),
        "google.storage.object.archive" => LegacyKind::Storage("google.cloud.storage.object.v1.archived"),
        "google.storage.object.metadataUpdate" => LegacyKind::Storage("google.cloud.storage.object.v1.metadataUpdated"),
        _ => return Err(EventError::UnsupportedLegacyEvent(event_type.to_owned())),
    })
}

/// A CloudEvent however it came (HTTP binary or structured, a Pub/Sub message, the local queue): its type,
/// source and id, and its data as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub ty: String,
    pub source: String,
    pub id: String,
    pub data: Value,
}

/// A command or an event carried by a Pub/Sub message: the CloudEvents Pub/Sub binding (`ce-*` attributes, data = the
/// command), or a structured CloudEvent as the message data. Its identity is the CloudEvent's source and id
/// when it has them (the same command reaching us by several paths is one command), else the message id.
pub fn envelope_of_message(m: &PushMessage) -> Result<Envelope, ApiError> {
    let data_json = |bytes: &Bytes| -> Result<Value, ApiError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid("invalid_message", format!("message data is not JSON: {e}")))
    };
    let source_of_message = || format!("//pubsub/{}", m.subscription.as_deref().unwrap_or("push"));
    if let Some(ty) = m.attributes.get("ce-type") {
        return Ok(Envelope {
            ty: ty.clone(),
            source: m.attributes.get("ce-source").cloned().unwrap_or_else(source_of_message),
            id: m.attributes.get("ce-id").cloned().unwrap_or_else(|| m.message_id.clone()),
            data: data_json(&m.data)?,
        });
    }
    let structured = data_json(&m.data)?;
    match (structured["type"].as_str(), structured.get("data")) {
        (Some(ty), Some(data)) => Ok(Envelope {
            ty: ty.to_owned(),
            source: structured["source"].as_str().map(str::to_owned).unwrap_or_else(source_of_message),
            id: structured["id"].as_str().map(str::to_owned).unwrap_or_else(|| m.message_id.clone()),
            data: data.clone(),
        }),
        _ => Err(ApiError::invalid(
            "invalid_message",
            "the message carries no CloudEvent: no ce-type attribute nor a structured event",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `cloudevent_http` fuzz target: without serde_json's `float_roundtrip` feature, the structured
    /// mode's `data` member `{"x":4.444444444444445e+106}` was read one unit in the last place off, and handed on as
    /// `{"x":4.4444444444444455e+106}`.
    #[test]
    fn structured_json_data_keeps_its_numbers_exactly() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"x":4.444444444444445e+106}}"#;
        let event = parse_cloudevents(&headers, body, false).expect("a valid event").remove(0);
        assert_eq!(event.data.as_deref(), Some(br#"{"x":4.444444444444445e+106}"#.as_slice()));
    }
}
