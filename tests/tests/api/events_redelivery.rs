//! Redelivery (CONTRACT.md, invariants 3 and 5): Pub/Sub, Eventarc and Shopify deliver at least once and in no
//! particular order. Every command delivered 1–3 times, shuffled, across `/events` (binary, structured and
//! Eventarc's `messagePublished`), `/pubsub/push` (binding attributes and structured data) and the Shopify webhook,
//! ends exactly where delivering each once, in order, ends: the same levels, the same movements, and one event per
//! movement. Seeded: the seed is printed, and `STOCKROOM_TEST_SEED` replays it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::join_all;
use serde_json::{Value, json};
use stockroom_e2e::{Api, Backend, Reply, Rng, TestApp, count_rows, replayed_levels};

on_every_store!(
    delivering_every_command_one_to_three_times_in_random_order_gives_the_same_levels_and_events_as_once_in_order
);

const SOURCE: &str = "//test/redelivery";
const SECRET: &str = "shpss_current_secret";
const SKUS: [&str; 4] = ["TEE", "MUG", "CAP", "LAMP"];
/// Counted from outside only: a late, older count is ignored by design, so run B may book fewer movements for it.
const EXTERNAL_SKU: &str = "LAMP";
const NEWEST_COUNT: i64 = 23;

const ADJUST: &str = "dev.stockroom.command.adjust.v1";
const HOLD: &str = "dev.stockroom.command.hold.v1";
const COMMIT: &str = "dev.stockroom.command.commit.v1";
const FULFIL: &str = "dev.stockroom.command.fulfil.v1";
const RELEASE: &str = "dev.stockroom.command.release.v1";
const SELL: &str = "dev.stockroom.command.sell.v1";
const SET_FROM_EXTERNAL: &str = "dev.stockroom.command.set-from-external.v1";
const REFUSED: &str = "dev.stockroom.reservation.refused.v1";

const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";
const TOPIC: &str = "//pubsub.googleapis.com/projects/p/topics/stockroom-commands";
const SUBSCRIPTION: &str = "projects/p/subscriptions/s";

/// Deliveries sent at once in run B.
const IN_FLIGHT: usize = 3;
/// Run B gives up (and fails) after this many 503s: something is never going to apply.
const REQUEUES_MAX: usize = 5_000;

/// One thing a sender asks for: a Stockroom command (a CloudEvent), or a Shopify webhook.
#[derive(Debug)]
enum Step {
    Command { ty: &'static str, id: String, data: Value },
    Webhook { topic: &'static str, webhook_id: String, body: Value },
}

/// The steps, in an order in which each finds what it depends on; the first `opening` put the stock in.
struct Scenario {
    steps: Vec<Step>,
    opening: usize,
}

impl Scenario {
    fn command(&mut self, ty: &'static str, data: Value) {
        let id = format!("redelivery-{:02}", self.steps.len());
        self.steps.push(Step::Command { ty, id, data });
    }

    fn adjust(&mut self, changes: &[(&str, &str, i64)], reason: &str) {
        let changes: Vec<Value> = changes
            .iter()
            .map(|(sku, location, delta)| {
                json!({ "sku": sku, "location": location, "delta": delta, "reason": reason, "reference": "redelivery" })
            })
            .collect();
        self.command(ADJUST, json!({ "changes": changes }));
    }

    fn sell(&mut self, id: &str, lines: Value) {
        self.command(SELL, json!({ "reservation_id": id, "lines": lines, "reference": format!("ref-{id}") }));
    }

    fn hold(&mut self, id: &str, lines: Value) {
        self.command(HOLD, json!({ "reservation_id": id, "lines": lines, "ttl_seconds": 3600 }));
    }

    fn commit(&mut self, id: &str, lines: Option<Value>) {
        let mut data = json!({ "reservation_id": id });
        if let Some(lines) = lines {
            data["lines"] = lines;
        }
        self.command(COMMIT, data);
    }

    fn then(&mut self, ty: &'static str, id: &str) {
        self.command(ty, json!({ "reservation_id": id }));
    }

    fn count(&mut self, on_hand: i64, observed_at: &str) {
        let data = json!({
            "sku": EXTERNAL_SKU, "location": "north", "on_hand": on_hand, "system": "shopify",
            "observed_at": observed_at, "reference": format!("count@{observed_at}"),
        });
        self.command(SET_FROM_EXTERNAL, data);
    }

    fn webhook(&mut self, topic: &'static str, order: u64, lines: &[(&str, i64)]) {
        let line_items: Vec<Value> = lines
            .iter()
            .enumerate()
            .map(|(n, (sku, quantity))| json!({ "id": n + 1, "sku": sku, "quantity": quantity }))
            .collect();
        let body = json!({ "id": order, "name": format!("#{order}"), "line_items": line_items });
        let webhook_id = format!("wh-{}-{order}", topic.replace('/', "-"));
        self.steps.push(Step::Webhook { topic, webhook_id, body });
    }
}

/// Two locations (north sourced first), three skus sold and held, one sku counted from outside. North holds far
/// more than every unplaced line together, so sourcing never spills over and no hold or sale is ever refused,
/// whatever the order after the opening stock.
fn scenario() -> Scenario {
    let mut s = Scenario { steps: Vec::new(), opening: 0 };
    s.adjust(&[("TEE", "north", 100), ("TEE", "south", 40)], "received");
    s.adjust(&[("MUG", "north", 60), ("MUG", "south", 30)], "received");
    s.adjust(&[("CAP", "south", 50)], "received");
    s.opening = s.steps.len();

    s.sell("order-1", json!([{ "sku": "TEE", "quantity": 3 }]));
    s.sell("order-2", json!([{ "sku": "MUG", "quantity": 2, "location": "south" }, { "sku": "TEE", "quantity": 1 }]));
    s.hold("hold-1", json!([{ "sku": "TEE", "quantity": 4 }]));
    s.webhook("orders/create", 1001, &[("TEE", 2)]);
    s.sell("order-3", json!([{ "sku": "CAP", "quantity": 4 }]));
    s.hold("hold-2", json!([{ "sku": "MUG", "quantity": 6 }]));
    s.count(20, "2026-03-01T10:00:00Z");
    s.then(FULFIL, "order-1");
    s.commit("hold-1", None);
    s.sell("order-4", json!([{ "sku": "TEE", "quantity": 2, "location": "south" }]));
    s.adjust(&[("TEE", "north", 10)], "received");
    s.hold("hold-3", json!([{ "sku": "CAP", "quantity": 3, "location": "south" }]));
    s.webhook("orders/create", 1002, &[("MUG", 1)]);
    s.then(RELEASE, "order-2");
    s.commit("hold-2", Some(json!([{ "sku": "MUG", "quantity": 4 }])));
    s.sell("order-5", json!([{ "sku": "MUG", "quantity": 5 }]));
    s.count(17, "2026-03-01T11:00:00Z");
    s.webhook("orders/fulfilled", 1001, &[("TEE", 2)]);
    // Shipping what is only held yet is "not yet" (503), not a refusal.
    s.then(FULFIL, "hold-1");
    s.adjust(&[("MUG", "south", -3)], "damaged");
    s.hold("hold-4", json!([{ "sku": "TEE", "quantity": 2 }, { "sku": "MUG", "quantity": 1 }]));
    s.then(RELEASE, "hold-3");
    s.sell("order-6", json!([{ "sku": "TEE", "quantity": 1 }, { "sku": "CAP", "quantity": 1 }]));
    s.webhook("orders/create", 1003, &[("TEE", 1), ("CAP", 2)]);
    s.then(RELEASE, "order-5");
    s.webhook("orders/cancelled", 1002, &[("MUG", 1)]);
    s.count(NEWEST_COUNT, "2026-03-01T12:00:00Z");
    s.then(FULFIL, "order-3");
    s.adjust(&[("CAP", "south", 5)], "found");
    s.then(FULFIL, "order-6");
    s
}

/// How a command reaches the suite.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `/events`, binary-mode CloudEvent.
    EventsBinary,
    /// `/events`, `application/cloudevents+json`.
    EventsStructured,
    /// `/pubsub/push`, the CloudEvents Pub/Sub binding: `ce-*` attributes, data = the command.
    PushAttributes,
    /// `/pubsub/push`, a structured CloudEvent as the message data.
    PushStructured,
    /// `/events`, Eventarc's `messagePublished` of a Pub/Sub message in either of the two forms above.
    Eventarc { structured: bool },
    /// `/webhooks/shopify`, for a webhook step.
    Webhook,
}

#[derive(Debug, Clone, Copy)]
struct Delivery {
    step: usize,
    /// The how-manyth delivery of its step (0-based).
    nth: u64,
    path: Path,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends one delivery. Each carries its own Pub/Sub message id (as if the publisher had published the command
/// again), so that only the CloudEvent's source and id can tell repeats apart.
async fn deliver(api: &Api, steps: &[Step], d: Delivery) -> Reply {
    let (ty, id, data) = match &steps[d.step] {
        Step::Webhook { topic, webhook_id, body } => return api.shopify(topic, webhook_id, body, Some(SECRET)).await,
        Step::Command { ty, id, data } => (*ty, id.as_str(), data),
    };
    let structured = json!({
        "specversion": "1.0", "id": id, "source": SOURCE, "type": ty, "datacontenttype": "application/json",
        "data": data,
    });
    let message_id = format!("{}", 4_000_000 + d.step as u64 * 10 + d.nth);
    let message = |structured_data: bool| {
        let (payload, attributes) = if structured_data {
            (structured.to_string(), json!({}))
        } else {
            let attributes = json!({ "ce-specversion": "1.0", "ce-type": ty, "ce-source": SOURCE, "ce-id": id });
            (data.to_string(), attributes)
        };
        json!({
            "data": b64(payload.as_bytes()), "attributes": attributes, "messageId": message_id,
            "publishTime": "2026-03-01T09:00:00.123Z",
        })
    };
    match d.path {
        Path::EventsBinary => api.command_event(ty, SOURCE, id, data).await,
        Path::Webhook => unreachable!("a command step is never delivered as a webhook"),
        Path::EventsStructured => {
            let headers = [("content-type", "application/cloudevents+json")];
            api.send("POST", "/events", &headers, Some(structured.to_string().into_bytes())).await
        }
        Path::PushAttributes | Path::PushStructured => {
            let envelope = json!({
                "message": message(matches!(d.path, Path::PushStructured)), "subscription": SUBSCRIPTION,
                "deliveryAttempt": d.nth + 1,
            });
            api.json("POST", "/pubsub/push", &envelope).await
        }
        Path::Eventarc { structured } => {
            let published = json!({ "message": message(structured), "subscription": SUBSCRIPTION });
            let headers = [
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-type", MESSAGE_PUBLISHED),
                ("ce-source", TOPIC),
                ("ce-id", message_id.as_str()),
            ];
            api.send("POST", "/events", &headers, Some(published.to_string().into_bytes())).await
        }
    }
}

/// Every delivery of `range`'s steps, 1–3 each by random paths, shuffled.
fn deliveries(rng: &mut Rng, steps: &[Step], range: std::ops::Range<usize>) -> Vec<Delivery> {
    let mut out = Vec::new();
    for step in range {
        for nth in 0..=rng.below(3) {
            let path = match (&steps[step], rng.below(5)) {
                (Step::Webhook { .. }, _) => Path::Webhook,
                (_, 0) => Path::EventsBinary,
                (_, 1) => Path::EventsStructured,
                (_, 2) => Path::PushAttributes,
                (_, 3) => Path::PushStructured,
                _ => Path::Eventarc { structured: rng.below(2) == 1 },
            };
            out.push(Delivery { step, nth, path });
        }
    }
    rng.shuffle(&mut out);
    out
}

/// What run B's deliveries were answered, by path and outcome (`503 <error>` for those sent again).
type Tally = BTreeMap<(String, String), usize>;

/// Sends `queue`, a few at once; a 503 goes to the back of the queue, as Pub/Sub would redeliver it. Every other
/// answer is a 2xx, and no command is refused.
async fn send_all(api: &Api, steps: &[Step], mut queue: VecDeque<Delivery>, tally: &mut Tally, ctx: &str) {
    let mut requeued = 0;
    while !queue.is_empty() {
        let batch: Vec<Delivery> = (0..IN_FLIGHT).filter_map(|_| queue.pop_front()).collect();
        let replies = join_all(batch.iter().map(|d| deliver(api, steps, *d))).await;
        let mut progressed = false;
        for (d, r) in batch.into_iter().zip(replies) {
            let path = format!("{:?}", d.path);
            if r.status == 503 {
                *tally.entry((path, format!("503 {}", r.error_code()))).or_insert(0) += 1;
                requeued += 1;
                assert!(requeued <= REQUEUES_MAX, "{ctx}: still 503 after {requeued} requeues: {d:?} {r:?}");
                queue.push_back(d);
                continue;
            }
            progressed = true;
            assert!((200..300).contains(&r.status), "{ctx}: {d:?} of {:?} answered {r:?}", steps[d.step]);
            let expected: &[&str] =
                if matches!(d.path, Path::Webhook) { &["accepted"] } else { &["applied", "duplicate"] };
            let outcome = r.body["outcome"].as_str().unwrap_or("");
            assert!(expected.contains(&outcome), "{ctx}: {d:?} of {:?} answered {r:?}", steps[d.step]);
            *tally.entry((path, outcome.to_owned())).or_insert(0) += 1;
        }
        if !progressed {
            // Only commands ahead of their predecessors are left in this round: give the others a moment.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Waits until the command queue (what the webhooks handed on) is empty, and checks nothing was parked.
async fn drained(app: &TestApp, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox WHERE state = 'pending'").await;
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{ctx}: {pending} queued commands still pending after 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox WHERE state <> 'done'").await;
    assert_eq!(dead, 0, "{ctx}: queued commands that were never applied");
}

async fn locations(api: &Api) {
    api.location("north", 1).await;
    api.location("south", 2).await;
}

/// `GET /v1/stock/{sku}` for every sku, read until two reads 100 ms apart agree.
async fn settled_levels(api: &Api, ctx: &str) -> Vec<Value> {
    let read = || async { join_all(SKUS.iter().map(|sku| api.stock(sku))).await };
    let mut last = read().await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("{ctx}: the levels did not settle");
}

type MovementKey = (String, String, String, i64, i64, i64, String, Option<String>, Option<String>);

fn movement_key(m: &Value) -> MovementKey {
    let text = |f: &str| m[f].as_str().unwrap_or("").to_owned();
    let opt = |f: &str| m[f].as_str().map(str::to_owned);
    let n = |f: &str| m[f].as_i64().unwrap_or(i64::MIN);
    (
        text("kind"),
        text("sku"),
        text("location"),
        n("on_hand_delta"),
        n("reserved_delta"),
        n("committed_delta"),
        text("reason"),
        opt("reference"),
        opt("cause"),
    )
}

/// What one run ended with.
struct Outcome {
    levels: Vec<Value>,
    /// Every movement but the externally counted sku's, as a multiset.
    movements: BTreeMap<MovementKey, usize>,
    external_movements: usize,
}

/// The run's levels and movements, after checking that the ledger replays to the levels and that the outbox holds
/// exactly one event per movement (with its id) and nothing else: no refusal, no duplicate.
async fn observe(app: &TestApp, run: &str, ctx: &str) -> Outcome {
    let levels = settled_levels(app, ctx).await;
    let replayed = replayed_levels(app).await;
    for view in &levels {
        for row in view["locations"].as_array().into_iter().flatten() {
            let key =
                (view["sku"].as_str().unwrap_or("").to_owned(), row["location"].as_str().unwrap_or("").to_owned());
            let stored = (row["on_hand"].as_i64(), row["reserved"].as_i64(), row["committed"].as_i64());
            let r = replayed.get(&key).copied().unwrap_or_default();
            assert_eq!(
                stored,
                (Some(r.0), Some(r.1), Some(r.2)),
                "{ctx}: run {run}: {key:?} is not its ledger replayed"
            );
        }
    }

    let all = app.all_movements("").await;
    let rows = stockroom_e2e::rows(&app.db.url, "SELECT id, event FROM outbox ORDER BY id").await;
    let mut events = BTreeSet::new();
    for row in &rows {
        let id = row.text(0).expect("an id");
        let event: Value = serde_json::from_str(&row.text(1).expect("an event")).expect("event JSON");
        assert_ne!(event["type"], REFUSED, "{ctx}: run {run}: a command was refused: {event}");
        assert_eq!(event["id"].as_str(), Some(id.as_str()), "{ctx}: run {run}: the row id is the event id");
        assert_eq!(event["data"]["movement"]["id"].as_str(), Some(id.as_str()), "{ctx}: run {run}: {event}");
        events.insert(id);
    }
    let ids: BTreeSet<String> = all.iter().map(|m| m["id"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(ids.len(), all.len(), "{ctx}: run {run}: movement ids are unique");
    assert_eq!(rows.len(), all.len(), "{ctx}: run {run}: one outbox event per movement, no other");
    assert_eq!(events, ids, "{ctx}: run {run}: the outbox ids are the movement ids");
    let outbox_count = count_rows(&app.db.url, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(outbox_count, all.len() as i64, "{ctx}: run {run}: outbox rows");

    let mut movements = BTreeMap::new();
    let mut external_movements = 0;
    for m in &all {
        if m["sku"] == EXTERNAL_SKU {
            external_movements += 1;
        } else {
            *movements.entry(movement_key(m)).or_insert(0) += 1;
        }
    }
    Outcome { levels, movements, external_movements }
}

async fn delivering_every_command_one_to_three_times_in_random_order_gives_the_same_levels_and_events_as_once_in_order(
    b: Backend,
) {
    let (mut rng, seed) = Rng::from_env("events_redelivery");
    let ctx = format!("STOCKROOM_TEST_SEED={seed} on {b:?}");
    let Scenario { steps, opening } = scenario();

    // Run A: each command once, in order, over /events; each webhook's commands applied before the next step.
    let started = Instant::now();
    let a = TestApp::spawn(b).await;
    locations(&a).await;
    for step in &steps {
        match step {
            Step::Command { ty, id, data } => {
                let r = a.command_event(ty, SOURCE, id, data).await;
                assert_eq!(
                    (r.status, r.body["outcome"].as_str()),
                    (200, Some("applied")),
                    "{ctx}: run A: {step:?}: {r:?}"
                );
            }
            Step::Webhook { topic, webhook_id, body } => {
                let r = a.shopify(topic, webhook_id, body, Some(SECRET)).await;
                assert_eq!(
                    (r.status, r.body["outcome"].as_str()),
                    (200, Some("accepted")),
                    "{ctx}: run A: {step:?}: {r:?}"
                );
                drained(&a, &ctx).await;
            }
        }
    }
    drained(&a, &ctx).await;
    let once = observe(&a, "A", &ctx).await;
    drop(a.stop().await);
    let run_a = started.elapsed();

    // Run B: 1–3 deliveries of everything by random paths, shuffled. The opening stock goes first (its own
    // deliveries shuffled): a sale that came before any stock would be refused, rightly, and stay refused.
    let started = Instant::now();
    let b_app = TestApp::spawn(b).await;
    locations(&b_app).await;
    let mut tally = Tally::new();
    let first = deliveries(&mut rng, &steps, 0..opening);
    send_all(&b_app, &steps, first.into(), &mut tally, &ctx).await;
    let then = deliveries(&mut rng, &steps, opening..steps.len());
    send_all(&b_app, &steps, then.into(), &mut tally, &ctx).await;
    drained(&b_app, &ctx).await;
    let shuffled = observe(&b_app, "B", &ctx).await;
    let retried = count_rows(&b_app.db.url, "SELECT COUNT(*) FROM command_inbox WHERE attempts > 1").await;
    drop(b_app.stop().await);
    println!(
        "{ctx}: run A {run_a:?}; run B {:?}, {} steps, {retried} webhook commands retried by the worker, answers by \
         path: {tally:?}",
        started.elapsed(),
        steps.len()
    );

    // The same levels everywhere, the externally counted sku at its newest count in both.
    assert_eq!(shuffled.levels, once.levels, "{ctx}: final levels differ between once-in-order (right) and shuffled");
    let external = once
        .levels
        .iter()
        .find(|v| v["sku"] == EXTERNAL_SKU)
        .unwrap_or_else(|| panic!("{ctx}: no levels for {EXTERNAL_SKU}"));
    assert_eq!(external["total"]["on_hand"], NEWEST_COUNT, "{ctx}: the newest count wins: {external}");

    // The same movements, as a multiset.
    if shuffled.movements != once.movements {
        let keys: BTreeSet<&MovementKey> = once.movements.keys().chain(shuffled.movements.keys()).collect();
        let diff: Vec<String> = keys
            .into_iter()
            .filter_map(|k| {
                let (x, y) =
                    (once.movements.get(k).copied().unwrap_or(0), shuffled.movements.get(k).copied().unwrap_or(0));
                (x != y).then(|| format!("{k:?}: once {x}, shuffled {y}"))
            })
            .collect();
        panic!("{ctx}: the movements differ:\n{}", diff.join("\n"));
    }
    assert_eq!(once.external_movements, 3, "{ctx}: in order, every count books a movement");
    assert!(
        (1..=3).contains(&shuffled.external_movements),
        "{ctx}: shuffled, the counts booked {} movements",
        shuffled.external_movements
    );
}
