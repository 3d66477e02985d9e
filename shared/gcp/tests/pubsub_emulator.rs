#![cfg(feature = "pubsub")]
//! The Pub/Sub publisher over the wire: round trips through a Pub/Sub emulator (`scripts/pubsub-emulator`, which
//! prints the `PUBSUB_EMULATOR_HOST` to run with), and failures through a loopback server of our own that fails
//! chosen requests (an emulator cannot be told to).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use stockroom_gcp::{Auth, PubSubConfig, PubSubPublisher};
use stockroom_runtime::services::{CommandBus, EventSink};
use stockroom_store::{OutboxEvent, QueuedCommand, StoreError};

// ---------------------------------------------------------------------------------------------------------------
// Against the emulator
// ---------------------------------------------------------------------------------------------------------------

/// The emulator's base URL. Unset is a failure, not a skip: this file is only run with `--features pubsub`, by
/// `.ci/run`, after it started the emulator.
fn emulator() -> String {
    match std::env::var("PUBSUB_EMULATOR_HOST") {
        Ok(host) if !host.trim().is_empty() => format!("http://{}", host.trim()),
        _ => panic!(
            "PUBSUB_EMULATOR_HOST is not set: start the emulator with `scripts/pubsub-emulator` and run these tests \
             with the PUBSUB_EMULATOR_HOST=host:port line it prints"
        ),
    }
}

/// A project of its own for each test (and each run), so that no topic or subscription is shared.
fn unique_project(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("sr-{test}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn config(endpoint: &str, project: &str, topic: &str, batch_max: usize) -> PubSubConfig {
    PubSubConfig {
        endpoint: endpoint.to_owned(),
        project: project.to_owned(),
        topic: topic.to_owned(),
        batch_max,
        timeout_ms: 5_000,
        retries_max: 2,
    }
}

/// The emulator's admin and subscriber side, over its REST API.
struct Emulator {
    base: String,
    project: String,
    http: reqwest::Client,
}

/// A pulled message.
#[derive(Debug)]
struct Pulled {
    data: Vec<u8>,
    attributes: BTreeMap<String, String>,
    ordering_key: String,
    publish_time: String,
}

impl Emulator {
    fn new(test: &str) -> Self {
        Self { base: emulator(), project: unique_project(test), http: reqwest::Client::new() }
    }

    async fn put(&self, path: &str, body: Value) {
        let url = format!("{}/v1/projects/{}/{path}", self.base, self.project);
        let response = self.http.put(&url).json(&body).send().await.unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT {url}: {status} {text}");
    }

    async fn create_topic(&self, topic: &str) {
        self.put(&format!("topics/{topic}"), json!({})).await;
    }

    /// An ordered pull subscription, named by the path alone (Google's emulator never answers a body whose `name`
    /// differs from the path's).
    async fn create_ordered_subscription(&self, sub: &str, topic: &str) {
        let body = json!({
            "topic": format!("projects/{}/topics/{topic}", self.project),
            "enableMessageOrdering": true,
            "ackDeadlineSeconds": 60,
        });
        self.put(&format!("subscriptions/{sub}"), body).await;
    }

    /// Pulls and acknowledges until `expected` messages came (or 30 s passed), then pulls a little longer to catch
    /// any extra (duplicate) delivery. Returns the messages in delivery order, and the most one pull returned.
    async fn pull_all(&self, sub: &str, expected: usize) -> (Vec<Pulled>, usize) {
        let base = format!("{}/v1/projects/{}/subscriptions/{sub}", self.base, self.project);
        let mut pulled = Vec::new();
        let mut most_in_one_pull = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now > deadline || quiet_until.is_some_and(|q| now > q) {
                break;
            }
            let answer: Value = self
                .http
                .post(format!("{base}:pull"))
                .json(&json!({"maxMessages": 100, "returnImmediately": true}))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            let received = answer["receivedMessages"].as_array().cloned().unwrap_or_default();
            most_in_one_pull = most_in_one_pull.max(received.len());
            let mut ack_ids = Vec::new();
            for r in &received {
                ack_ids.push(r["ackId"].as_str().unwrap().to_owned());
                let m = &r["message"];
                pulled.push(Pulled {
                    data: STANDARD.decode(m["data"].as_str().unwrap_or_default()).unwrap(),
                    attributes: serde_json::from_value(m["attributes"].clone()).unwrap_or_default(),
                    ordering_key: m["orderingKey"].as_str().unwrap_or_default().to_owned(),
                    publish_time: m["publishTime"].as_str().unwrap_or_default().to_owned(),
                });
            }
            if !ack_ids.is_empty() {
                self.http
                    .post(format!("{base}:acknowledge"))
                    .json(&json!({ "ackIds": ack_ids }))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if pulled.len() >= expected && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + Duration::from_millis(500));
            }
        }
        (pulled, most_in_one_pull)
    }
}

const KEYS: [&str; 3] = ["SKU-RED-1", "sku.blue_2:eu/x", "C3"];

/// `n` outbox events as the store writes them (structured CloudEvents), keys mixed in runs and interleavings.
fn outbox_events(n: usize) -> Vec<OutboxEvent> {
    let mut seed: u64 = 0x5eed;
    (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let sku = KEYS[((seed >> 33) % 3) as usize];
            let id = format!("0196a3b2-0000-7000-8000-{i:012}");
            let event = json!({
                "specversion": "1.0",
                "id": id,
                "source": if i % 2 == 0 { "//stockroom/reservations" } else { "//stockroom/stock-updates" },
                "type": if i % 2 == 0 { "dev.stockroom.reservation.held.v1" } else { "dev.stockroom.stock.changed.v1" },
                "subject": sku,
                "time": format!("2026-03-01T12:00:{:02}.{:06}Z", i % 60, i),
                "datacontenttype": "application/json",
                "data": {
                    "movement": {"id": id, "sku": sku, "location": "wh-1", "kind": "hold", "on_hand_delta": 0,
                                 "reserved_delta": i as i64 + 1, "committed_delta": 0, "reason": "test ü ✓"},
                    "levels": {"on_hand": 1000, "reserved": i, "committed": 0, "safety_stock": 0,
                               "available": 1000 - i as i64},
                },
            });
            OutboxEvent { id, sku: sku.to_owned(), event }
        })
        .collect()
}

/// The attributes the binding gives an event: exactly these.
fn expected_attributes(e: &OutboxEvent) -> BTreeMap<String, String> {
    let s = |k: &str| e.event[k].as_str().unwrap().to_owned();
    BTreeMap::from([
        ("ce-specversion".to_owned(), s("specversion")),
        ("ce-id".to_owned(), s("id")),
        ("ce-source".to_owned(), s("source")),
        ("ce-type".to_owned(), s("type")),
        ("ce-subject".to_owned(), s("subject")),
        ("ce-time".to_owned(), s("time")),
        ("content-type".to_owned(), "application/json".to_owned()),
    ])
}

fn ids_by_key<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, id) in items {
        by_key.entry(key).or_default().push(id);
    }
    by_key
}

#[tokio::test]
async fn outbox_events_arrive_once_each_as_cloudevents_in_order_per_sku() {
    let emulator = Emulator::new("events");
    emulator.create_topic("inventory-events").await;
    emulator.create_ordered_subscription("events-sub", "inventory-events").await;
    let events = outbox_events(250);
    let publisher = PubSubPublisher::new(
        config(&emulator.base, &emulator.project, "inventory-events", 100),
        reqwest::Client::new(),
    );

    EventSink::publish(&publisher, &events).await.unwrap_or_else(|e| panic!("publish failed: {e:?}"));

    let (pulled, most_in_one_pull) = emulator.pull_all("events-sub", events.len()).await;
    let by_id: HashMap<&str, &OutboxEvent> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut seen = HashSet::new();
    for m in &pulled {
        let id = m.attributes.get("ce-id").map(String::as_str).unwrap_or_default();
        let e = by_id.get(id).unwrap_or_else(|| panic!("a message that was not published: {m:?}"));
        assert!(seen.insert(id), "{id} delivered twice");
        assert_eq!(m.attributes, expected_attributes(e), "attributes of {id}");
        assert_eq!(serde_json::from_slice::<Value>(&m.data).unwrap(), e.event["data"], "data of {id}");
        assert_eq!(m.ordering_key, e.sku, "ordering key of {id}");
    }
    assert_eq!(seen.len(), events.len(), "every event arrives");

    // Per ordering key, delivered in the order published; and published in that order (publish times do not go
    // back; message ids are opaque to subscribers, so they say nothing about order).
    let sent = ids_by_key(events.iter().map(|e| (e.sku.as_str(), e.id.as_str())));
    let got = ids_by_key(pulled.iter().map(|m| (m.ordering_key.as_str(), m.attributes["ce-id"].as_str())));
    assert_eq!(got, sent, "order per ordering key");
    for key in KEYS {
        let times: Vec<&str> =
            pulled.iter().filter(|m| m.ordering_key == key).map(|m| m.publish_time.as_str()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "publish times of {key} go back: {times:?}");
    }
    // Ordering does not mean one message at a time: a pull may hand out several of a key, in order.
    eprintln!("most messages in one pull: {most_in_one_pull} (3 keys)");
}

#[tokio::test]
async fn commands_go_to_inventory_commands_as_cloudevents() {
    let emulator = Emulator::new("commands");
    emulator.create_topic("inventory-commands").await;
    emulator.create_ordered_subscription("commands-sub", "inventory-commands").await;
    let commands: Vec<QueuedCommand> = (0..7)
        .map(|i| QueuedCommand {
            id: format!("shopify-order-{i}"),
            ty: if i % 2 == 0 { "dev.stockroom.command.sell.v1" } else { "dev.stockroom.command.release.v1" }
                .to_owned(),
            source: "//stockroom/webhooks".to_owned(),
            ordering_key: match i % 3 {
                0 => "order-1001",
                1 => "order-1002",
                _ => "", // no ordering key: no orderingKey field
            }
            .to_owned(),
            data: json!({"reservation_id": format!("r-{i}"), "lines": [{"sku": "SKU-1", "quantity": i + 1}]}),
            attempts: 0,
        })
        .collect();
    // Events go to a topic that does not exist here: only the command topic is used.
    let publisher =
        PubSubPublisher::new(config(&emulator.base, &emulator.project, "no-events-here", 3), reqwest::Client::new());

    CommandBus::publish(&publisher, commands.clone()).await.unwrap();

    let (pulled, _) = emulator.pull_all("commands-sub", commands.len()).await;
    assert_eq!(pulled.len(), commands.len(), "{pulled:?}");
    for m in &pulled {
        let c = commands.iter().find(|c| c.id == m.attributes["ce-id"]).expect("a published command");
        let time = m.attributes.get("ce-time").expect("ce-time");
        assert!(time.len() >= 20 && time.ends_with('Z'), "ce-time {time}");
        let mut attributes = m.attributes.clone();
        attributes.remove("ce-time");
        assert_eq!(
            attributes,
            BTreeMap::from([
                ("ce-specversion".to_owned(), "1.0".to_owned()),
                ("ce-id".to_owned(), c.id.clone()),
                ("ce-source".to_owned(), c.source.clone()),
                ("ce-type".to_owned(), c.ty.clone()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ])
        );
        assert_eq!(serde_json::from_slice::<Value>(&m.data).unwrap(), c.data);
        assert_eq!(m.ordering_key, c.ordering_key);
    }
    let sent = ids_by_key(commands.iter().filter(|c| !c.ordering_key.is_empty()).map(|c| (&*c.ordering_key, &*c.id)));
    let got = ids_by_key(
        pulled.iter().filter(|m| !m.ordering_key.is_empty()).map(|m| (&*m.ordering_key, &*m.attributes["ce-id"])),
    );
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_missing_topic_publishes_nothing_and_says_so() {
    let emulator = Emulator::new("missing");
    let publisher = PubSubPublisher::new(
        config(&emulator.base, &emulator.project, "inventory-events", 100),
        reqwest::Client::new(),
    );

    let err = EventSink::publish(&publisher, &outbox_events(5)).await.expect_err("no topic");
    assert!(err.published.is_empty(), "{err:?}");
    assert!(err.reason.contains("404"), "{err:?}");

    let command = QueuedCommand {
        id: "c1".to_owned(),
        ty: "dev.stockroom.command.hold.v1".to_owned(),
        source: "//stockroom/webhooks".to_owned(),
        ordering_key: "r-1".to_owned(),
        data: json!({}),
        attempts: 0,
    };
    let err = CommandBus::publish(&publisher, vec![command]).await.expect_err("no topic");
    assert!(matches!(&err, StoreError::Config(reason) if reason.contains("404")), "{err:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Against a loopback server that fails chosen requests
// ---------------------------------------------------------------------------------------------------------------

enum Answer {
    Accept,
    Status(u16),
    /// Answers 200 only after this long (past the client's timeout); the messages do not count as accepted.
    Slow(Duration),
}

type Plan = Box<dyn Fn(usize, &[String]) -> Answer + Send + Sync>;

/// Every publish request seen, in order.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    ids: Vec<String>,
    keys: Vec<String>,
    authorization: Option<String>,
}

struct Fake {
    plan: Plan,
    requests: Mutex<Vec<Seen>>,
    /// ce-ids of accepted messages, in order.
    accepted: Mutex<Vec<String>>,
    token_fetches: AtomicUsize,
}

impl Fake {
    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }
}

async fn fake_pubsub(plan: impl Fn(usize, &[String]) -> Answer + Send + Sync + 'static) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        plan: Box::new(plan),
        requests: Mutex::default(),
        accepted: Mutex::default(),
        token_fetches: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fake)
}

async fn handle(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if uri.path() == "/token" {
        if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
            return (StatusCode::FORBIDDEN, "Metadata-Flavor missing").into_response();
        }
        let n = fake.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let token = json!({"access_token": format!("tok-{n}"), "expires_in": 3599, "token_type": "Bearer"});
        return axum::Json(token).into_response();
    }
    assert!(uri.path().ends_with(":publish"), "unexpected request {uri}");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let messages = request["messages"].as_array().unwrap();
    let ids: Vec<String> = messages.iter().map(|m| m["attributes"]["ce-id"].as_str().unwrap().to_owned()).collect();
    let keys = messages.iter().map(|m| m["orderingKey"].as_str().unwrap_or_default().to_owned()).collect();
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    let n = {
        let mut requests = fake.requests.lock().unwrap();
        requests.push(Seen { path: uri.path().to_owned(), ids: ids.clone(), keys, authorization });
        requests.len() - 1
    };
    match (fake.plan)(n, &ids) {
        Answer::Accept => {
            fake.accepted.lock().unwrap().extend(ids.iter().cloned());
            let message_ids: Vec<String> = (0..ids.len()).map(|i| format!("{n}-{i}")).collect();
            axum::Json(json!({ "messageIds": message_ids })).into_response()
        }
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            let body = json!({"error": {"code": code, "message": "planned failure", "status": "PLANNED"}});
            (status, axum::Json(body)).into_response()
        }
        Answer::Slow(wait) => {
            tokio::time::sleep(wait).await;
            axum::Json(json!({"messageIds": []})).into_response()
        }
    }
}

/// `n` events per key, keys taking turns: A-0, B-0, C-0, A-1, ...
fn round_robin(n: usize) -> Vec<OutboxEvent> {
    (0..n)
        .flat_map(|i| ["A", "B", "C"].map(|k| (k, i)))
        .map(|(k, i)| {
            let id = format!("{k}-{i}");
            let event = json!({
                "specversion": "1.0", "id": id, "source": "//stockroom/test", "type": "dev.stockroom.stock.changed.v1",
                "subject": k, "time": "2026-03-01T12:00:00Z", "datacontenttype": "application/json", "data": {"i": i},
            });
            OutboxEvent { id, sku: k.to_owned(), event }
        })
        .collect()
}

fn publisher_at(base: &str, batch_max: usize, retries_max: u32, timeout_ms: u64) -> PubSubPublisher {
    let config = PubSubConfig { timeout_ms, retries_max, ..config(base, "p", "inventory-events", batch_max) };
    PubSubPublisher::new(config, reqwest::Client::new())
}

#[tokio::test]
async fn a_refused_event_stops_later_events_of_its_key_and_only_those() {
    let (base, fake) =
        fake_pubsub(|_, ids| if ids.iter().any(|id| id == "A-3") { Answer::Status(400) } else { Answer::Accept }).await;
    let events = round_robin(10);

    let err = EventSink::publish(&publisher_at(&base, 4, 2, 5_000), &events).await.expect_err("A-3 is refused");

    assert_eq!(err.published, fake.accepted(), "`published` is what went out, in order");
    let expected: Vec<String> = events
        .iter()
        .map(|e| e.id.clone())
        .filter(|id| !matches!(id.as_str(), "A-3" | "A-4" | "A-5" | "A-6" | "A-7" | "A-8" | "A-9"))
        .collect();
    assert_eq!(err.published, expected, "A stops at A-3; B and C go on");
    assert!(err.reason.contains("A-3") && err.reason.contains("400"), "{}", err.reason);
    // Nothing of A after A-3 was even sent; the refused batch was sent again one by one (a 400 is not retried).
    let requests = fake.requests();
    for later in 4..10 {
        let id = format!("A-{later}");
        assert!(requests.iter().all(|r| !r.ids.contains(&id)), "{id} was sent: {requests:?}");
    }
    let with_a3: Vec<&Seen> = requests.iter().filter(|r| r.ids.iter().any(|id| id == "A-3")).collect();
    assert_eq!(with_a3.len(), 2, "the batch, then A-3 alone: {with_a3:?}");
    assert_eq!(with_a3[1].ids, ["A-3"]);
    assert!(requests.iter().all(|r| r.ids.len() <= 4), "batch_max");
    assert!(requests.iter().all(|r| r.path == "/v1/projects/p/topics/inventory-events:publish"), "{requests:?}");
    assert!(requests.iter().all(|r| r.authorization.is_none()), "no auth with an http:// endpoint");
    // Ordering keys are the skus; each request keeps the given order.
    for r in &requests {
        for (id, key) in r.ids.iter().zip(&r.keys) {
            assert_eq!(&id[..1], key);
        }
    }
}

#[tokio::test]
async fn an_event_that_is_not_a_cloudevent_stops_its_key() {
    let (base, fake) = fake_pubsub(|_, _| Answer::Accept).await;
    let mut events = round_robin(3);
    events[4].event.as_object_mut().unwrap().remove("type"); // B-1

    let err = EventSink::publish(&publisher_at(&base, 100, 0, 5_000), &events).await.expect_err("B-1 is no CloudEvent");

    assert_eq!(err.published, ["A-0", "B-0", "C-0", "A-1", "C-1", "A-2", "C-2"]);
    assert_eq!(fake.accepted(), err.published);
    assert!(err.reason.contains("B-1"), "{}", err.reason);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    // The first two attempts fail (503, 429), the third goes through.
    let (base, fake) = fake_pubsub(|n, _| match n {
        0 => Answer::Status(503),
        1 => Answer::Status(429),
        _ => Answer::Accept,
    })
    .await;
    let events = round_robin(4);

    EventSink::publish(&publisher_at(&base, 5, 3, 5_000), &events).await.unwrap();

    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(fake.accepted(), ids, "each once, in order");
    assert_eq!(fake.requests().len(), 2 + 3, "two failed attempts, then three batches");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let (base, fake) =
        fake_pubsub(|n, _| if n == 0 { Answer::Slow(Duration::from_secs(3)) } else { Answer::Accept }).await;
    let events = round_robin(2);

    EventSink::publish(&publisher_at(&base, 100, 1, 300), &events).await.unwrap();

    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(fake.accepted(), ids);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn pubsub_unavailable_stops_the_call_after_bounded_retries() {
    let (base, fake) = fake_pubsub(|n, _| if n == 0 { Answer::Accept } else { Answer::Status(503) }).await;
    let events = round_robin(5);
    let started = Instant::now();

    let err = EventSink::publish(&publisher_at(&base, 4, 2, 5_000), &events).await.expect_err("unavailable");

    assert_eq!(err.published, ["A-0", "B-0", "C-0", "A-1"]);
    assert_eq!(fake.requests().len(), 1 + 3, "one batch, then one more tried three times; nothing after");
    assert!(err.reason.contains("503") && err.reason.contains("3 attempts"), "{}", err.reason);
    assert!(started.elapsed() < Duration::from_secs(5), "backoff is bounded: {:?}", started.elapsed());
}

#[tokio::test]
async fn tokens_come_from_the_metadata_server_cached_and_renewed_when_refused() {
    // The second publish request is refused as unauthorised once: the token is fetched again.
    let (base, fake) = fake_pubsub(|n, _| if n == 1 { Answer::Status(401) } else { Answer::Accept }).await;
    let publisher = publisher_at(&base, 100, 2, 5_000).with_auth(Auth::Metadata { token_url: format!("{base}/token") });

    EventSink::publish(&publisher, &round_robin(1)).await.unwrap();
    EventSink::publish(&publisher, &round_robin(2)).await.unwrap();
    EventSink::publish(&publisher, &round_robin(1)).await.unwrap();

    let auth: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.authorization).collect();
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    assert_eq!(auth, [bearer("tok-1"), bearer("tok-1"), bearer("tok-2"), bearer("tok-2")]);
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn command_bus_failures_are_store_errors() {
    let command = |i: usize| QueuedCommand {
        id: format!("c{i}"),
        ty: "dev.stockroom.command.hold.v1".to_owned(),
        source: "//stockroom/webhooks".to_owned(),
        ordering_key: "r-1".to_owned(),
        data: json!({"i": i}),
        attempts: 0,
    };

    let (base, fake) = fake_pubsub(|_, _| Answer::Status(503)).await;
    let err = CommandBus::publish(&publisher_at(&base, 100, 1, 5_000), vec![command(1)]).await.expect_err("503");
    assert!(matches!(err, StoreError::Transient(_)) && err.is_transient(), "{err:?}");
    assert_eq!(fake.requests().len(), 2);

    let (base, _) = fake_pubsub(|_, _| Answer::Status(400)).await;
    let err = CommandBus::publish(&publisher_at(&base, 100, 3, 5_000), vec![command(1)]).await.expect_err("400");
    assert!(matches!(err, StoreError::Internal(_)) && !err.is_transient(), "{err:?}");

    let (base, _) = fake_pubsub(|_, _| Answer::Status(403)).await;
    let err = CommandBus::publish(&publisher_at(&base, 100, 3, 5_000), vec![command(1)]).await.expect_err("403");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");

    // More commands than a batch: several requests, in order, to the commands topic.
    let (base, fake) = fake_pubsub(|_, _| Answer::Accept).await;
    CommandBus::publish(&publisher_at(&base, 2, 0, 5_000), (0..5).map(command).collect()).await.unwrap();
    assert_eq!(fake.accepted(), ["c0", "c1", "c2", "c3", "c4"]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.path == "/v1/projects/p/topics/inventory-commands:publish"), "{requests:?}");
    assert!(requests.iter().all(|r| r.keys.iter().all(|k| k == "r-1")), "{requests:?}");
}
