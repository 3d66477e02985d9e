//! Publishing to Pub/Sub over its REST API (`POST /v1/projects/{project}/topics/{topic}:publish`).
//!
//! Why REST over `reqwest` and not the official `google-cloud-pubsub` crate: that crate speaks gRPC (tonic,
//! prost, the generated Google API types, its own auth stack) and costs minutes of cold compile and most of a GB
//! of `target/` for the one call made here; reqwest is already in the graph.
//!
//! Messages follow the CloudEvents Pub/Sub protocol binding in binary content mode: the event's `data` is the
//! message data, each other CloudEvents attribute is a `ce-<name>` message attribute, `datacontenttype` is
//! `content-type`. Ordering: Pub/Sub keeps the order of an ordering key's messages within and across publish
//! requests as long as they are sent in order and nothing of that key is sent after one of them failed, so
//! requests go out one after another (consecutive messages batched), and a failed key is not sent again in the
//! same call.
//!
//! Auth: with an emulator (a plain `http://` endpoint) none; otherwise an access token from the metadata server
//! (Cloud Run's service account), cached until shortly before it expires (`google::MetadataToken`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use stockroom_runtime::services::{CommandBus, EventSink, SinkError};
use stockroom_store::{OutboxEvent, QueuedCommand, StoreError};

use stockroom_google::{Api, Auth, Refusal, backoff, describe, emulator_endpoint};

/// Pub/Sub's global endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://pubsub.googleapis.com";
/// Where outgoing CloudEvents go (the contract's "Events out").
pub const EVENTS_TOPIC: &str = "inventory-events";
/// Where commands go when the command bus is Pub/Sub.
pub const COMMANDS_TOPIC: &str = "inventory-commands";

/// Pub/Sub allows 1000 messages and 10 MB a publish request.
const BATCH_MAX_ALLOWED: usize = 1000;
/// Request bytes at most (Pub/Sub's limit is 10 MB), leaving room for the JSON around the messages.
const REQUEST_BYTES_MAX: usize = 9_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubConfig {
    /// `https://pubsub.googleapis.com` (or a regional endpoint), or an emulator's `http://127.0.0.1:8085`.
    pub endpoint: String,
    pub project: String,
    /// The events topic, normally [`EVENTS_TOPIC`].
    pub topic: String,
    /// Messages per publish request at most (Pub/Sub allows 1000).
    pub batch_max: usize,
    /// Per HTTP request, token fetches included.
    pub timeout_ms: u64,
    /// Retries of a transient failure (HTTP 408/409/429/499/5xx, timeouts, connection errors), with backoff.
    pub retries_max: u32,
}

impl PubSubConfig {
    /// Google's endpoint, the given project and topic, 100 messages a request, 10 s timeout, 5 retries.
    pub fn new(project: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            endpoint: GOOGLE_ENDPOINT.to_owned(),
            project: project.into(),
            topic: topic.into(),
            batch_max: 100,
            timeout_ms: 10_000,
            retries_max: 5,
        }
    }

    /// As [`PubSubConfig::new`], but on the emulator named by `PUBSUB_EMULATOR_HOST` (`host:port`) when it is set.
    pub fn from_env(project: impl Into<String>, topic: impl Into<String>) -> Self {
        Self { endpoint: emulator_endpoint("PUBSUB_EMULATOR_HOST", GOOGLE_ENDPOINT), ..Self::new(project, topic) }
    }
}

/// Publishes outbox events (as [`EventSink`]) and commands (as [`CommandBus`]) to Pub/Sub.
pub struct PubSubPublisher {
    config: PubSubConfig,
    api: Api,
    commands_topic: String,
}

impl PubSubPublisher {
    /// No auth when the endpoint is plain `http://` (an emulator: Google serves only HTTPS), else metadata-server
    /// tokens. Commands go to [`COMMANDS_TOPIC`].
    pub fn new(mut config: PubSubConfig, http: reqwest::Client) -> Self {
        config.batch_max = config.batch_max.clamp(1, BATCH_MAX_ALLOWED);
        Self {
            api: Api::new(http, &config.endpoint, config.timeout_ms),
            config,
            commands_topic: COMMANDS_TOPIC.to_owned(),
        }
    }

    pub fn with_auth(self, auth: Auth) -> Self {
        Self { api: self.api.with_auth(auth), ..self }
    }

    pub fn with_commands_topic(mut self, topic: impl Into<String>) -> Self {
        self.commands_topic = topic.into();
        self
    }

    pub fn config(&self) -> &PubSubConfig {
        &self.config
    }

    /// Publishes one request's messages, retrying transient failures with backoff. A request is all or nothing
    /// on Pub/Sub's side, except after a timeout, when it may have gone through: then the retry publishes the
    /// messages again (same `ce-id`; consumers dedupe on it).
    async fn publish_request(&self, topic: &str, messages: &[&Message]) -> Result<(), Failure> {
        let url = format!("{}/v1/projects/{}/topics/{}:publish", self.api.endpoint(), self.config.project, topic);
        let body = serde_json::to_vec(&PublishRequest { messages })
            .map_err(|e| Failure::Rejected(format!("could not encode the publish request: {e}")))?;
        let mut attempt = 0;
        loop {
            match self.try_publish(&url, &body).await {
                Ok(()) => return Ok(()),
                Err((Failure::Transient(reason), retry_after)) if attempt < self.config.retries_max => {
                    let wait = backoff(attempt, retry_after);
                    tracing::debug!(topic, attempt, ?wait, reason, "pubsub publish failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((Failure::Transient(reason), _)) => {
                    return Err(Failure::Transient(format!("{reason} (gave up after {} attempts)", attempt + 1)));
                }
                Err((failure, _)) => return Err(failure),
            }
        }
    }

    /// One attempt; on failure also the server's `Retry-After`, if any.
    async fn try_publish(&self, url: &str, body: &[u8]) -> Result<(), (Failure, Option<Duration>)> {
        let response = self.api.send(Method::POST, url, Some(body.to_vec())).await.map_err(refused)?;
        // The answer ({"messageIds": [...]}) must arrive whole, or the request may not have gone through.
        response.bytes().await.map(|_| ()).map_err(|e| (Failure::Transient(describe(url, &e)), None))
    }
}

/// What a refused publish request means, and the server's `Retry-After`, if any.
fn refused(refusal: Refusal) -> (Failure, Option<Duration>) {
    let (status, reason, retry_after) = match refusal {
        Refusal::Transient(reason) => return (Failure::Transient(reason), None),
        Refusal::Fatal(reason) => return (Failure::Fatal(reason), None),
        Refusal::Status { status, reason, retry_after, .. } => (status, reason, retry_after),
    };
    let failure = match status {
        // Pub/Sub's retryable codes: DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, CANCELLED, INTERNAL,
        // UNKNOWN, UNAVAILABLE.
        s if s == StatusCode::REQUEST_TIMEOUT
            || s == StatusCode::CONFLICT
            || s == StatusCode::TOO_MANY_REQUESTS
            || s.as_u16() == 499
            || s.is_server_error() =>
        {
            Failure::Transient(reason)
        }
        // No such topic or project, no permission: no request to this topic can succeed.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Failure::Fatal(reason),
        // INVALID_ARGUMENT and the like: something in these messages.
        _ => Failure::Rejected(reason),
    };
    (failure, retry_after)
}

/// Why a publish request did not go through, after its retries.
#[derive(Debug)]
enum Failure {
    /// Pub/Sub (or the network, or the token source) is unavailable: stop, try again later.
    Transient(String),
    /// Pub/Sub refused these messages (HTTP 400 and the like); other messages may go through.
    Rejected(String),
    /// No request can succeed (topic or project missing, permission denied): stop.
    Fatal(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Self::Transient(r) | Self::Rejected(r) | Self::Fatal(r) => r,
        }
    }
}

/// A Pub/Sub `PubsubMessage` as the REST API takes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    /// base64
    data: String,
    attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    ordering_key: String,
}

impl Message {
    /// About what it adds to a request's JSON.
    fn size(&self) -> usize {
        self.data.len()
            + self.ordering_key.len()
            + self.attributes.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
            + 64
    }
}

#[derive(Serialize)]
struct PublishRequest<'a> {
    messages: &'a [&'a Message],
}

/// An outbox event (a structured CloudEvent) as a message in the binary content mode of the Pub/Sub binding.
fn event_message(e: &OutboxEvent) -> Result<Message, String> {
    let Value::Object(event) = &e.event else {
        return Err(format!("event {}: not a structured CloudEvent (a JSON object)", e.id));
    };
    let mut attributes = BTreeMap::new();
    for (name, value) in event {
        let key = match name.as_str() {
            "data" | "data_base64" => continue,
            "datacontenttype" => "content-type".to_owned(),
            _ => format!("ce-{name}"),
        };
        let value = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(format!("event {}: attribute {name} is not a string, number or boolean", e.id));
            }
        };
        attributes.insert(key, value);
    }
    for required in ["ce-specversion", "ce-id", "ce-source", "ce-type"] {
        if !attributes.contains_key(required) {
            return Err(format!("event {}: a CloudEvent needs {}", e.id, &required[3..]));
        }
    }
    let content_type = attributes.entry("content-type".to_owned()).or_insert_with(|| "application/json".to_owned());
    let data = match (event.get("data"), event.get("data_base64")) {
        (_, Some(Value::String(b64))) => {
            STANDARD.decode(b64).map_err(|err| format!("event {}: data_base64 is not base64: {err}", e.id))?
        }
        (Some(Value::String(text)), _) if !is_json(content_type) => text.clone().into_bytes(),
        (Some(data), _) => serde_json::to_vec(data).map_err(|err| format!("event {}: {err}", e.id))?,
        (None, _) => Vec::new(),
    };
    Ok(Message { data: STANDARD.encode(data), attributes, ordering_key: e.sku.clone() })
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

/// A queued command as a CloudEvent message (binary mode), ordered by its ordering key.
fn command_message(c: &QueuedCommand, time: &str) -> Message {
    let attributes = BTreeMap::from([
        ("ce-specversion".to_owned(), "1.0".to_owned()),
        ("ce-id".to_owned(), c.id.clone()),
        ("ce-source".to_owned(), c.source.clone()),
        ("ce-type".to_owned(), c.ty.clone()),
        ("ce-time".to_owned(), time.to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ]);
    Message { data: STANDARD.encode(c.data.to_string()), attributes, ordering_key: c.ordering_key.clone() }
}

#[async_trait]
impl EventSink for PubSubPublisher {
    /// In order, consecutive events batched. When a request is refused (HTTP 400-like) its events are sent again
    /// one by one, so that only the refused event's key stops; an event that cannot be made into a message stops
    /// its key too. Either way the other keys go on, and the call ends in a `SinkError`. When Pub/Sub is
    /// unavailable (after the retries), or the topic cannot be published to, the call stops there.
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), SinkError> {
        let mut published = Vec::with_capacity(events.len());
        let mut stopped: HashSet<&str> = HashSet::new();
        let mut problems: Vec<String> = Vec::new();
        let mut next = 0;
        while next < events.len() {
            let mut batch: Vec<(&OutboxEvent, Message)> = Vec::new();
            let mut bytes = 0;
            while next < events.len() && batch.len() < self.config.batch_max {
                let e = &events[next];
                if stopped.contains(e.sku.as_str()) {
                    next += 1;
                    continue;
                }
                match event_message(e) {
                    Ok(message) => {
                        let size = message.size();
                        if !batch.is_empty() && bytes + size > REQUEST_BYTES_MAX {
                            break;
                        }
                        bytes += size;
                        batch.push((e, message));
                    }
                    Err(reason) => {
                        tracing::warn!(event = %e.id, key = %e.sku, reason, "event cannot be published; its key waits");
                        stopped.insert(&e.sku);
                        problems.push(reason);
                    }
                }
                next += 1;
            }
            if batch.is_empty() {
                continue;
            }
            let messages: Vec<&Message> = batch.iter().map(|(_, m)| m).collect();
            match self.publish_request(&self.config.topic, &messages).await {
                Ok(()) => published.extend(batch.iter().map(|(e, _)| e.id.clone())),
                Err(Failure::Rejected(reason)) if batch.len() > 1 => {
                    // Nothing of the request went out: find the refused event(s), one request each, in order.
                    tracing::warn!(events = batch.len(), reason, "pubsub refused a batch; sending it one by one");
                    for (e, message) in &batch {
                        if stopped.contains(e.sku.as_str()) {
                            continue;
                        }
                        match self.publish_request(&self.config.topic, &[message]).await {
                            Ok(()) => published.push(e.id.clone()),
                            Err(Failure::Rejected(reason)) => {
                                tracing::warn!(event = %e.id, key = %e.sku, reason, "pubsub refused an event; its key waits");
                                stopped.insert(&e.sku);
                                problems.push(format!("event {}: {reason}", e.id));
                            }
                            Err(failure) => return Err(stop(published, problems, failure)),
                        }
                    }
                }
                Err(Failure::Rejected(reason)) => {
                    let (e, _) = &batch[0];
                    tracing::warn!(event = %e.id, key = %e.sku, reason, "pubsub refused an event; its key waits");
                    stopped.insert(&e.sku);
                    problems.push(format!("event {}: {reason}", e.id));
                }
                Err(failure) => return Err(stop(published, problems, failure)),
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(SinkError { published, reason: problems.join("; ") }) }
    }
}

fn stop(published: Vec<String>, mut problems: Vec<String>, failure: Failure) -> SinkError {
    problems.push(failure.reason().to_owned());
    SinkError { published, reason: problems.join("; ") }
}

#[async_trait]
impl CommandBus for PubSubPublisher {
    /// All or error: on `Ok` every command is in Pub/Sub (durable there). On error some may be: the caller's retry
    /// sends them again with the same `ce-source` + `ce-id`, which the receiving side dedupes on.
    ///
    /// Errors, in `StoreError` terms (the trait's error type; the store crate has no Pub/Sub variant):
    /// Pub/Sub unavailable → `Transient` (callers answer 503 and are retried); topic missing or permission
    /// denied → `Config`; messages refused → `Internal`.
    async fn publish(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError> {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let messages: Vec<Message> = commands.iter().map(|c| command_message(c, &time)).collect();
        let mut start = 0;
        while start < messages.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < messages.len() && end - start < self.config.batch_max {
                let size = messages[end].size();
                if end > start && bytes + size > REQUEST_BYTES_MAX {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let batch: Vec<&Message> = messages[start..end].iter().collect();
            self.publish_request(&self.commands_topic, &batch).await.map_err(|failure| match failure {
                Failure::Transient(reason) => StoreError::transient(format!("pubsub: {reason}")),
                Failure::Fatal(reason) => StoreError::Config(format!("pubsub: {reason}")),
                Failure::Rejected(reason) => StoreError::internal(format!("pubsub: {reason}")),
            })?;
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn outbox(id: &str, sku: &str, event: Value) -> OutboxEvent {
        OutboxEvent { id: id.to_owned(), sku: sku.to_owned(), event }
    }

    #[test]
    fn a_structured_event_becomes_a_binary_mode_message() {
        let event = json!({
            "specversion": "1.0", "id": "m1", "source": "//stockroom/reservations",
            "type": "dev.stockroom.reservation.held.v1", "subject": "SKU-1", "time": "2026-01-01T00:00:00.000000Z",
            "datacontenttype": "application/json", "traceparent": "00-abc-def-01", "data": {"a": 1},
        });
        let m = event_message(&outbox("m1", "SKU-1", event)).unwrap();
        assert_eq!(m.ordering_key, "SKU-1");
        assert_eq!(STANDARD.decode(&m.data).unwrap(), br#"{"a":1}"#);
        let names: Vec<&str> = m.attributes.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "ce-id",
                "ce-source",
                "ce-specversion",
                "ce-subject",
                "ce-time",
                "ce-traceparent",
                "ce-type",
                "content-type"
            ]
        );
        assert_eq!(m.attributes["content-type"], "application/json");
    }

    #[test]
    fn an_event_without_its_required_attributes_is_refused() {
        let err = event_message(&outbox("m1", "k", json!({"specversion": "1.0", "id": "m1", "source": "s"})));
        assert!(err.unwrap_err().contains("type"));
        assert!(event_message(&outbox("m1", "k", json!("text"))).is_err());
    }
}
