//! Invariant 5 across crashes: every movement produces exactly one outgoing event, eventually. The suite runs as a
//! child process and is killed (SIGKILL) after its ledger commits and before, or while, their events are
//! published; after a restart the relay publishes each waiting event once, in order per sku, and nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stockroom_e2e::{Api, Backend, ChildApp, SseEvent, TestDb, count_rows};
use tokio::task::JoinHandle;

on_every_store!(
    killing_the_suite_between_the_ledger_commit_and_the_publish_loses_no_event_and_duplicates_none,
    killing_the_suite_while_its_relay_runs_leaves_no_event_behind_and_publishes_none_twice_after_the_restart,
);

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");
// These tests follow the ledger's events. The aggregator, which the relay hands every event in `stockroom serve`,
// writes threshold events (`stock.low`, ...) to the same outbox; they are its own (tests/api/analytics.rs) and
// are left out here.
const NOT_ALERTS: &str = "event NOT LIKE '%\"source\":\"//stockroom/aggregator\"%'";
const UNPUBLISHED: &str = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND event NOT LIKE '%\"source\":\"//stockroom/aggregator\"%'";

fn ledger_events(events: Vec<SseEvent>) -> Vec<SseEvent> {
    events.into_iter().filter(|e| e.data["source"] != "//stockroom/aggregator").collect()
}
/// How long the stream must stay silent before a test takes it that everything has arrived.
const QUIET: Duration = Duration::from_millis(1_500);

async fn start(db: &TestDb, relay_interval_ms: &str) -> ChildApp {
    ChildApp::spawn_with(SERVER, &db.url, &[("STOCKROOM_RELAY_INTERVAL_MS", relay_interval_ms)]).await
}

/// `POST /jobs/relay-outbox` (authentication is off in these children); how many events it published.
async fn relay_job(api: &Api) -> i64 {
    let r = api.send("POST", "/jobs/relay-outbox", &[("x-cloudscheduler", "true")], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["published"].as_i64().unwrap_or_else(|| panic!("a count of published events: {r:?}"))
}

/// The outbox as stored: `(id, published)` in id order.
async fn outbox_rows(url: &str) -> Vec<(String, bool)> {
    let sql = format!("SELECT id, published_at FROM outbox WHERE {NOT_ALERTS} ORDER BY id");
    let rows = stockroom_e2e::rows(url, &sql).await;
    rows.iter().map(|r| (r.text(0).expect("an id"), r.opt_int(1).expect("a time or null").is_some())).collect()
}

/// Movement ids by sku, in ledger order.
fn ids_by_sku(movements: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut by_sku: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in movements {
        let (sku, id) = (m["sku"].as_str().expect("a sku"), m["id"].as_str().expect("an id"));
        by_sku.entry(sku.to_owned()).or_default().push(id.to_owned());
    }
    by_sku
}

/// Event ids as they came, by subject (the ordering key), after checking that each is a well-formed event.
fn event_ids_by_sku(events: &[SseEvent]) -> BTreeMap<String, Vec<String>> {
    let mut by_sku: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        assert_ne!(e.event, "lagged", "the listener fell behind: {e:?}");
        assert_eq!(e.data["id"].as_str(), Some(e.id.as_str()), "the SSE id is the event's id: {e:?}");
        let sku = e.data["subject"].as_str().unwrap_or_else(|| panic!("an event with a subject: {e:?}"));
        by_sku.entry(sku.to_owned()).or_default().push(e.id.clone());
    }
    by_sku
}

/// Ids seen more than once.
fn repeated(ids: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ids.iter().filter(|id| !seen.insert(id.as_str())).cloned().collect()
}

fn adjustment(sku: &str, location: &str, delta: i64) -> Value {
    json!({ "changes": [{ "sku": sku, "location": location, "delta": delta, "reason": "received" }] })
}

async fn killing_the_suite_between_the_ledger_commit_and_the_publish_loses_no_event_and_duplicates_none(b: Backend) {
    let db = TestDb::new(b).await;
    // The relay is off: every event the writes make waits in the outbox when the suite is killed.
    let app = start(&db, "0").await;
    app.location("near", 1).await;
    app.location("far", 2).await;
    let skus = ["OUT-A", "OUT-B", "OUT-C"];

    // 51 writes: receipts, holds (some split across both locations), sales in full and in part, releases and
    // damages, interleaved across three skus.
    let mut writes = 0;
    for sku in skus {
        let body = json!({ "changes": [
            { "sku": sku, "location": "near", "delta": 6, "reason": "received" },
            { "sku": sku, "location": "far", "delta": 40, "reason": "received" },
        ]});
        let r = app.json_with_key("POST", "/v1/adjustments", &format!("receive-{sku}"), &body).await;
        assert_eq!(r.status, 200, "{r:?}");
        writes += 1;
    }
    for round in 0..8 {
        for sku in skus {
            let id = format!("{sku}-{round}");
            let body = json!({ "reservation_id": id, "lines": [{ "sku": sku, "quantity": 4 }], "ttl_seconds": 3600 });
            let r = app.json("POST", "/v1/reservations", &body).await;
            assert_eq!(r.status, 201, "hold {id}: {r:?}");
            let r = match round % 4 {
                0 => app.send("POST", &format!("/v1/reservations/{id}/commit"), &[], None).await,
                1 => {
                    let part = json!({ "lines": [{ "sku": sku, "quantity": 1 }] });
                    app.json("POST", &format!("/v1/reservations/{id}/commit"), &part).await
                }
                2 => app.send("POST", &format!("/v1/reservations/{id}/release"), &[], None).await,
                _ => {
                    let damaged =
                        json!({ "changes": [{ "sku": sku, "location": "far", "delta": -1, "reason": "damaged" }] });
                    app.json_with_key("POST", "/v1/adjustments", &format!("damaged-{id}"), &damaged).await
                }
            };
            assert_eq!(r.status, 200, "{id}, round {round}: {r:?}");
            writes += 2;
        }
    }
    assert_eq!(writes, 51);

    let movements = app.all_movements("").await;
    assert!(movements.len() > writes, "some writes made more than one movement: {}", movements.len());
    let kinds: BTreeSet<&str> = movements.iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["adjustment", "commit", "hold", "release"]));
    let total = movements.len() as i64;
    assert_eq!(count_rows(&db.url, "SELECT COUNT(*) FROM outbox").await, total, "one event per movement");
    assert_eq!(count_rows(&db.url, UNPUBLISHED).await, total, "nothing was published before the kill");

    app.kill();

    let app = start(&db, "0").await;
    assert_eq!(app.all_movements("").await, movements, "the ledger survived the kill");
    assert_eq!(count_rows(&db.url, UNPUBLISHED).await, total, "every event still waits");
    let mut stream = app.subscribe("").await;
    assert_eq!(relay_job(&app).await, total, "the relay publishes every waiting event");
    let events = stream.until_quiet(QUIET).await;

    let published: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(repeated(&published), Vec::<String>::new(), "events published twice");
    let expected: BTreeSet<&str> = movements.iter().filter_map(|m| m["id"].as_str()).collect();
    let got: BTreeSet<&str> = published.iter().map(String::as_str).collect();
    assert_eq!(got.len(), published.len());
    assert_eq!(expected.difference(&got).count(), 0, "lost: {:?}", expected.difference(&got).collect::<Vec<_>>());
    assert_eq!(
        got.difference(&expected).count(),
        0,
        "not movements: {:?}",
        got.difference(&expected).collect::<Vec<_>>()
    );
    assert_eq!(event_ids_by_sku(&events), ids_by_sku(&movements), "per sku, the events come in ledger order");
    assert_eq!(count_rows(&db.url, UNPUBLISHED).await, 0, "every event is marked published");

    // A second run has nothing to do, and says so.
    assert_eq!(relay_job(&app).await, 0);
    let again = stream.next(Duration::from_millis(800)).await;
    assert!(again.is_none(), "a second relay published {again:?}");
    app.kill();
}

/// One request of the load; its status, or an error once the suite is gone.
async fn try_post(api: &Api, path: &str, idempotency_key: Option<&str>, body: &Value) -> Result<u16, reqwest::Error> {
    let mut request =
        api.http.post(format!("{}{path}", api.base)).header("content-type", "application/json").body(body.to_string());
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    Ok(request.send().await?.status().as_u16())
}

/// Concurrent writers, each on its own sku so that nothing is ever refused (a refusal would make an event that
/// is no movement's): a receipt, a hold, then a sale or a release of that hold, over and over.
fn spawn_load(api: &Api, clients: usize, acks: &Arc<AtomicUsize>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (api, acks, stop) = (api.clone(), acks.clone(), stop.clone());
            tokio::spawn(async move {
                let sku = format!("LOAD-{c}");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("load-{c}-{}", n / 3);
                    let sent = match n % 3 {
                        0 => {
                            let receipt = adjustment(&sku, if n % 2 == 0 { "near" } else { "far" }, 3);
                            try_post(&api, "/v1/adjustments", Some(&format!("receipt-{id}")), &receipt).await
                        }
                        1 => {
                            let lines = json!([{ "sku": sku, "quantity": 2 }]);
                            let hold = json!({ "reservation_id": id, "lines": lines, "ttl_seconds": 3600 });
                            try_post(&api, "/v1/reservations", None, &hold).await
                        }
                        _ => {
                            let verb = if n % 2 == 0 { "commit" } else { "release" };
                            try_post(&api, &format!("/v1/reservations/{id}/{verb}"), None, &json!({})).await
                        }
                    };
                    n += 1;
                    match sent {
                        Ok(200 | 201) => {
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(status) => {
                            assert!(status >= 500, "before the kill, only success or a server error: {status}")
                        }
                        Err(_) => return, // the suite is gone
                    }
                }
            })
        })
        .collect()
}

async fn killing_the_suite_while_its_relay_runs_leaves_no_event_behind_and_publishes_none_twice_after_the_restart(
    b: Backend,
) {
    let db = TestDb::new(b).await;
    let app = start(&db, "20").await;
    app.location("near", 1).await;
    app.location("far", 2).await;
    let mut before_kill = app.subscribe("").await;
    let listener = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(e) = before_kill.next(Duration::from_secs(20)).await {
            seen.push(e);
        }
        seen
    });

    let (acks, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let clients = spawn_load(&app.api, 6, &acks, &stop);
    // Up to a minute: the Spanner emulator applies one transaction at a time, so it gets there slowest.
    for _ in 0..6_000 {
        if acks.load(Ordering::Relaxed) >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(acks.load(Ordering::Relaxed) >= 150, "the load got going before the kill");
    app.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("a client");
    }
    let before_kill = ledger_events(listener.await.expect("the listener"));
    // The server's last commit may still be under way in the database after the kill: read once it is done.
    db.settle_after_kill().await;

    // As the kill left it: every movement has its event, some published (and marked), the rest waiting.
    let outbox = outbox_rows(&db.url).await;
    let waiting: Vec<String> = outbox.iter().filter(|(_, published)| !published).map(|(id, _)| id.clone()).collect();
    let marked: BTreeSet<String> =
        outbox.iter().filter(|(_, published)| *published).map(|(id, _)| id.clone()).collect();
    let seen_before: Vec<String> = before_kill.iter().map(|e| e.id.clone()).collect();
    println!(
        "{b:?}: {} acknowledged, {} events: {} marked, {} waiting; {} seen on the stream before the kill",
        acks.load(Ordering::Relaxed),
        outbox.len(),
        marked.len(),
        waiting.len(),
        seen_before.len()
    );
    assert_eq!(repeated(&seen_before), Vec::<String>::new(), "published twice before the kill");

    // A restart with the relay off shows what a restart publishes: the waiting events, once each, in order per
    // sku; none of those already marked. (An event published just before the kill, but not yet marked, is
    // published again here, once, under the same id.)
    let app = start(&db, "0").await;
    let movements = app.all_movements("").await;
    let movement_ids: BTreeSet<String> = movements.iter().filter_map(|m| m["id"].as_str()).map(str::to_owned).collect();
    let outbox_ids: BTreeSet<String> = outbox.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(outbox_ids, movement_ids, "one event per movement, written with it");
    assert!(seen_before.iter().all(|id| movement_ids.contains(id)), "only movements were published");

    let mut after_restart = app.subscribe("").await;
    let relayed = relay_job(&app).await;
    assert!(relayed >= waiting.len() as i64, "the restart publishes what waited: {relayed} of {}", waiting.len());
    let republished = ledger_events(after_restart.until_quiet(QUIET).await);
    let republished_ids: Vec<String> = republished.iter().map(|e| e.id.clone()).collect();
    assert_eq!(repeated(&republished_ids), Vec::<String>::new(), "published twice after the restart");
    let again: Vec<&String> = republished_ids.iter().filter(|id| marked.contains(*id)).collect();
    assert!(again.is_empty(), "events marked published before the kill went out again: {again:?}");
    let waiting_by_sku = ids_by_sku(
        &movements.iter().filter(|m| waiting.iter().any(|w| m["id"] == w.as_str())).cloned().collect::<Vec<_>>(),
    );
    assert_eq!(event_ids_by_sku(&republished), waiting_by_sku, "each waiting event once, in ledger order per sku");
    assert_eq!(count_rows(&db.url, UNPUBLISHED).await, 0);
    app.kill();

    // And with the background relay on after a restart: it catches up on new writes, each published once.
    let app = start(&db, "20").await;
    let mut stream = app.subscribe("").await;
    for n in 0..10 {
        let r =
            app.json_with_key("POST", "/v1/adjustments", &format!("after-{n}"), &adjustment("LOAD-0", "near", 1)).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let hold = json!({ "reservation_id": "after-hold", "lines": [{ "sku": "LOAD-1", "quantity": 1 }] });
    assert_eq!(app.json("POST", "/v1/reservations", &hold).await.status, 201);
    let caught_up = ledger_events(stream.until_quiet(QUIET).await);
    let caught_up_ids: Vec<String> = caught_up.iter().map(|e| e.id.clone()).collect();
    assert_eq!(repeated(&caught_up_ids), Vec::<String>::new(), "published twice by the background relay");
    let new_movements: Vec<Value> = app
        .all_movements("")
        .await
        .into_iter()
        .filter(|m| !movement_ids.contains(m["id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(new_movements.len(), 11);
    assert_eq!(event_ids_by_sku(&caught_up), ids_by_sku(&new_movements), "only the new events, once, in order");
    assert_eq!(count_rows(&db.url, UNPUBLISHED).await, 0, "nothing is left in the outbox");
    app.kill();
}
