//! Seeded fault histories, in the spirit of Jepsen's bank test and TigerBeetle's VOPR (issue 9). Clients hold,
//! commit, release and adjust a small stock through the HTTP API, retrying as a checkout would (the same key or
//! reservation id again after a dropped connection, a 503 or a 409 `idempotency_in_progress`), while faults hit:
//! the suite is killed (SIGKILL) and started again on the same database, and on PostgreSQL the store "restarts":
//! every connection to it is cut and new ones are refused for a while. Each history is then checked:
//! - every acknowledged write is in the ledger: each acknowledged adjustment's units, each acknowledged hold's
//!   reservation, and each reservation in the state its last acknowledged command left it;
//! - no unit was sold twice: committed and reserved figures are exactly the sums of the reservations in those
//!   states, and no location promises more than it has on hand;
//! - replaying the movements gives the stored levels;
//! - each movement has exactly one outbox row under its own id, and every one is published once the relay has run;
//! - each movement's event is published once, as its consumers see it: the local aggregator (a durable consumer,
//!   which records an event before the relay marks it) holds exactly one event per movement, under the movement's
//!   id and with its deltas; and on the live feed, watched across every restart, no event arrives twice unless the
//!   relay was interrupted in between by a kill or a store cut (the relay publishes at least once and marks after;
//!   consumers dedupe on the stable id), a repeat is the identical event, and nothing arrives that is not a movement.
//!
//! `STOCKROOM_HISTORIES` (default 6 per store, as in `.ci/run`) sets how many; `STOCKROOM_HISTORY_SEED` the first
//! seed (default: from the clock). A failing history prints its seed; run it alone with `STOCKROOM_HISTORIES=1`.
//! Spanner's emulator is left out: it applies one transaction at a time, so a history there is minutes long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockroom_e2e::{Api, Backend, ChildApp, Reply, Rng, TestDb};
use tokio::task::JoinSet;

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");
/// The aggregator's low-stock alerts share the outbox; they are not movements.
const NOT_ALERTS: &str = "event NOT LIKE '%\"source\":\"//stockroom/aggregator\"%'";
const HISTORIES_DEFAULT: u64 = 6;
const CLIENTS: u64 = 4;
const STEPS: u64 = 10;
/// Attempts at one request before the history is declared stuck (about 40 s of faults).
const ATTEMPTS_MAX: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_fault_histories_keep_every_acknowledged_write_and_sell_nothing_twice_sqlite() {
    histories(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_fault_histories_keep_every_acknowledged_write_and_sell_nothing_twice_postgres() {
    histories(Backend::Postgres).await;
}

async fn histories(b: Backend) {
    let count = std::env::var("STOCKROOM_HISTORIES").ok().and_then(|n| n.parse().ok()).unwrap_or(HISTORIES_DEFAULT);
    let first = std::env::var("STOCKROOM_HISTORY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs() % 1_000_000)
    });
    eprintln!("histories on {b:?}: seeds {first}..{}", first + count);
    let db = TestDb::new(b).await;
    let (url, link) = match b {
        Backend::Postgres => {
            let link = FaultyLink::start(&db.url).await;
            (link.url.clone(), Some(link))
        }
        _ => (db.url.clone(), None),
    };
    let mut child = ChildApp::spawn(SERVER, &url).await;
    child.location("wh", 1).await;
    let mut tally = Tally::default();
    for seed in first..first + count {
        let _say = SayOnPanic(seed);
        child = history(seed, child, &url, &db.url, link.as_ref(), &mut tally).await;
    }
    eprintln!("histories on {b:?}: {count} checked, {tally:?}");
    assert!(tally.acknowledged > count * 4 && tally.kills + tally.cuts >= count, "the histories did little: {tally:?}");
}

/// What the histories did, over the run.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    kills: u64,
    cuts: u64,
    /// Events the live feed delivered again after a kill or a store cut interrupted the relay.
    redelivered: u64,
}

/// Prints the seed of the history that panicked.
struct SayOnPanic(u64);

impl Drop for SayOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("history failed: rerun it with STOCKROOM_HISTORY_SEED={} STOCKROOM_HISTORIES=1", self.0);
    }
}

/// What one client did, as the checker reads it.
#[derive(Debug, Clone)]
enum Op {
    Adjust { sku: String, delta: i64 },
    Hold { id: String, sku: String, quantity: i64 },
    Commit { id: String },
    Release { id: String },
}

/// One history on `child`; the child serving at its end (a kill replaces it).
async fn history(
    seed: u64,
    child: ChildApp,
    url: &str,
    db_url: &str,
    link: Option<&FaultyLink>,
    tally: &mut Tally,
) -> ChildApp {
    let mut rng = Rng::new(seed);
    let skus: Vec<String> = (0..2).map(|i| format!("H{seed}-{i}")).collect();
    let api = Arc::new(RwLock::new(child.api.clone()));
    let acked: Arc<Mutex<Vec<(Op, Reply)>>> = Arc::default();
    let mut watch = Watch::new(&skus);
    watch.follow(&child.api).await;

    // Opening stock, acknowledged before the clients start.
    for sku in &skus {
        let delta = 2 + rng.below(4) as i64;
        let op = Op::Adjust { sku: sku.clone(), delta };
        let reply = send(&api, &op, &format!("open-{sku}")).await;
        assert_eq!(reply.status, 200, "seed {seed}: opening stock: {reply:?}");
        acked.lock().expect("the record").push((op, reply));
    }

    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        let (api, acked, skus) = (api.clone(), acked.clone(), skus.clone());
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(c + 1));
        clients.spawn(async move {
            let mut mine: Vec<String> = Vec::new();
            for step in 0..STEPS {
                let sku = skus[rng.below(skus.len() as u64) as usize].clone();
                let op = match (rng.below(10), mine.is_empty()) {
                    (0..=1, _) => Op::Adjust { sku, delta: 1 + rng.below(2) as i64 },
                    (2..=5, _) | (_, true) => {
                        let id = format!("h{seed}-c{c}-s{step}");
                        mine.push(id.clone());
                        Op::Hold { id, sku, quantity: 1 + rng.below(2) as i64 }
                    }
                    (6..=8, false) => Op::Commit { id: mine[rng.below(mine.len() as u64) as usize].clone() },
                    _ => Op::Release { id: mine[rng.below(mine.len() as u64) as usize].clone() },
                };
                let reply = send(&api, &op, &format!("h{seed}-c{c}-k{step}")).await;
                assert!(reply.status < 500, "seed {seed}: a 5xx after retries: {op:?} {reply:?}");
                if reply.status < 300 {
                    acked.lock().expect("the record").push((op, reply));
                }
                tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
            }
        });
    }

    // Faults while the clients run: kills of the suite, and on PostgreSQL cuts of the store.
    let mut child = child;
    let faults = 1 + rng.below(2);
    for _ in 0..faults {
        tokio::time::sleep(Duration::from_millis(20 + rng.below(150))).await;
        match (link, rng.below(2)) {
            (Some(link), 0) => {
                watch.cuts.lock().expect("the cuts").push(Instant::now());
                link.cut(Duration::from_millis(100 + rng.below(400))).await;
                tally.cuts += 1;
            }
            _ => {
                tally.kills += 1;
                child.kill();
                child = ChildApp::spawn(SERVER, url).await;
                watch.follow(&child.api).await;
                *api.write().expect("the api") = child.api.clone();
            }
        }
    }
    while let Some(done) = clients.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    let acked = acked.lock().expect("the record").clone();
    tally.acknowledged += acked.len() as u64;
    check(seed, &child.api, db_url, &skus, &acked).await;
    tally.redelivered += watch.check(seed, db_url).await;
    child
}

/// `op` sent until it is answered by the ledger: a dropped connection, a 503 or a 409 `idempotency_in_progress`
/// is sent again with the same key and body, to whichever suite serves now.
async fn send(api: &RwLock<Api>, op: &Op, key: &str) -> Reply {
    let (path, body) = match op {
        Op::Adjust { sku, delta } => (
            "/v1/adjustments".to_owned(),
            json!({ "changes": [{ "sku": sku, "location": "wh", "delta": delta, "reason": "received" }] }),
        ),
        Op::Hold { id, sku, quantity } => (
            "/v1/reservations".to_owned(),
            json!({ "reservation_id": id, "lines": [{ "sku": sku, "quantity": quantity }], "ttl_seconds": 3600 }),
        ),
        Op::Commit { id } => (format!("/v1/reservations/{id}/commit"), json!({})),
        Op::Release { id } => (format!("/v1/reservations/{id}/release"), json!({})),
    };
    for _ in 0..ATTEMPTS_MAX {
        let current = api.read().expect("the api").clone();
        let sent = current
            .http
            .post(format!("{}{path}", current.base))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(10))
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            if let Ok(bytes) = r.bytes().await {
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let reply = Reply { status, body, headers };
                let again = status == 503 || (status == 409 && reply.error_code() == "idempotency_in_progress");
                if !again {
                    return reply;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{op:?} was never answered in {ATTEMPTS_MAX} attempts");
}

async fn check(seed: u64, api: &Api, db_url: &str, skus: &[String], acked: &[(Op, Reply)]) {
    // The relay publishes whatever waits; then nothing of these SKUs is left unpublished.
    for _ in 0..100 {
        let r = api.send("POST", "/jobs/relay-outbox", &[], None).await;
        if r.status == 200 && r.body["published"].as_i64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The reservation states the acknowledged commands left, in the order the record took them.
    let mut held: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut last: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut received: BTreeMap<String, i64> = BTreeMap::new();
    for (op, _) in acked {
        match op {
            Op::Adjust { sku, delta } => *received.entry(sku.clone()).or_default() += delta,
            Op::Hold { id, sku, quantity } => {
                held.insert(id.clone(), (sku.clone(), *quantity));
                last.insert(id.clone(), "held");
            }
            Op::Commit { id } => {
                last.insert(id.clone(), "committed");
            }
            Op::Release { id } => {
                last.insert(id.clone(), "released");
            }
        }
    }
    let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
    let mut committed: BTreeMap<String, i64> = BTreeMap::new();
    for (id, (sku, quantity)) in &held {
        let r = api.get(&format!("/v1/reservations/{id}")).await;
        assert_eq!(r.status, 200, "seed {seed}: acknowledged hold {id} is not in the ledger: {r:?}");
        let status = r.body["status"].as_str().unwrap_or("");
        // Commands race on one reservation across clients only through the record's order, and each client
        // works on its own reservations, so the last acknowledged command decides the state.
        assert_eq!(status, last[id], "seed {seed}: reservation {id} after its acknowledged commands: {}", r.body);
        match status {
            "held" => *reserved.entry(sku.clone()).or_default() += quantity,
            "committed" => *committed.entry(sku.clone()).or_default() += quantity,
            _ => {}
        }
    }

    let outbox: Vec<(String, bool)> = stockroom_e2e::rows(
        db_url,
        &format!(
            "SELECT id, published_at FROM outbox WHERE sku IN ('{}') AND {NOT_ALERTS} ORDER BY id",
            skus.join("', '")
        ),
    )
    .await
    .iter()
    .map(|r| (r.text(0).expect("an id"), r.opt_int(1).expect("a time or null").is_some()))
    .collect();
    let mut movement_ids = Vec::new();
    for sku in skus {
        let movements = api.all_movements(&format!("&sku={sku}")).await;
        let mut replayed = (0, 0, 0);
        let mut adjusted = 0;
        for m in &movements {
            movement_ids.push(m["id"].as_str().unwrap_or("").to_owned());
            replayed.0 += m["on_hand_delta"].as_i64().unwrap_or(0);
            replayed.1 += m["reserved_delta"].as_i64().unwrap_or(0);
            replayed.2 += m["committed_delta"].as_i64().unwrap_or(0);
            if m["kind"] == "adjustment" {
                adjusted += m["on_hand_delta"].as_i64().unwrap_or(0);
            }
        }
        let total = api.stock(sku).await["total"].clone();
        let stored = (
            total["on_hand"].as_i64().unwrap_or(-1),
            total["reserved"].as_i64().unwrap_or(-1),
            total["committed"].as_i64().unwrap_or(-1),
        );
        assert_eq!(replayed, stored, "seed {seed}: replaying {sku}'s movements");
        assert_eq!(adjusted, received.get(sku).copied().unwrap_or(0), "seed {seed}: {sku}'s acknowledged receipts");
        assert_eq!(stored.1, reserved.get(sku).copied().unwrap_or(0), "seed {seed}: {sku} reserved = live holds");
        assert_eq!(stored.2, committed.get(sku).copied().unwrap_or(0), "seed {seed}: {sku} committed = sales");
        assert!(stored.1 + stored.2 <= stored.0, "seed {seed}: {sku} promises more than it has: {total}");
        assert!(total["available"].as_i64().unwrap_or(-1) >= 0, "seed {seed}: {sku} oversold: {total}");
    }
    movement_ids.sort();
    let outbox_ids: Vec<&String> = outbox.iter().map(|(id, _)| id).collect();
    assert_eq!(outbox_ids, movement_ids.iter().collect::<Vec<_>>(), "seed {seed}: one outbox row per movement");
    let unpublished: Vec<_> = outbox.iter().filter(|(_, published)| !published).collect();
    assert!(unpublished.is_empty(), "seed {seed}: events never published: {unpublished:?}");
}

/// The live feed of every suite a history ran, as one consumer sees it: each delivery of an event of the
/// history's SKUs, with the suite that sent it and when it arrived.
struct Watch {
    skus: Vec<String>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// When each store cut began.
    cuts: Arc<Mutex<Vec<Instant>>>,
    listeners: JoinSet<()>,
    stop: Arc<AtomicBool>,
}

struct Delivery {
    id: String,
    event: Value,
    /// Which suite sent it: 0 for the first the history watched, then one more for each restart.
    suite: usize,
    at: Instant,
}

/// How late a listener may be to see an event its suite sent, when judging whether a store cut came between two
/// deliveries (generous: a listener is a task of this test, rarely more than a few ms behind).
const LISTENER_LAG_MAX: Duration = Duration::from_secs(1);

impl Watch {
    fn new(skus: &[String]) -> Self {
        Self {
            skus: skus.to_vec(),
            deliveries: Arc::default(),
            cuts: Arc::default(),
            listeners: JoinSet::new(),
            stop: Arc::default(),
        }
    }

    /// Listens to `api`'s live feed from now until its suite dies or the watch ends. A suite relays in the
    /// background from its start, so a few events may go by before this listens: the aggregator's table, not
    /// the feed, shows that every event went out; the feed shows that none went out twice.
    async fn follow(&mut self, api: &Api) {
        let mut sse = api.subscribe("").await;
        let suite = self.listeners.len();
        let (skus, deliveries, stop) = (self.skus.clone(), self.deliveries.clone(), self.stop.clone());
        self.listeners.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(e) = sse.next(Duration::from_millis(100)).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mine = e.data["subject"].as_str().is_some_and(|s| skus.iter().any(|k| k == s));
                if mine && e.data["source"] != "//stockroom/aggregator" {
                    let d = Delivery { id: e.id, event: e.data, suite, at: Instant::now() };
                    deliveries.lock().expect("the deliveries").push(d);
                }
            }
        });
    }

    /// Checks what the consumers received once the relay has emptied the outbox; how many deliveries were
    /// repeats the relay's interruptions explain.
    async fn check(mut self, seed: u64, db_url: &str) -> u64 {
        // Whatever the last relay sent reaches the listener well within this.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.stop.store(true, Ordering::Relaxed);
        while self.listeners.join_next().await.is_some() {}
        let movements = deltas(db_url, "movements", &self.skus, "TRUE").await;
        // The durable consumer: one event per movement, under its id, carrying its deltas.
        let recorded = deltas(db_url, "analytics_events", &self.skus, "kind IS NOT NULL").await;
        assert_eq!(recorded, movements, "seed {seed}: the aggregator's events against the movements");

        // The live feed: nothing that is not a movement, and no repeat the relay's interruptions do not explain.
        let deliveries = self.deliveries.lock().expect("the deliveries");
        let cuts = self.cuts.lock().expect("the cuts");
        let mut first: BTreeMap<&str, &Delivery> = BTreeMap::new();
        let mut repeats = 0;
        for d in deliveries.iter() {
            assert!(
                movements.contains_key(&d.id),
                "seed {seed}: the feed sent an event that is no movement: {}",
                d.event
            );
            let Some(earlier) = first.get(d.id.as_str()) else {
                first.insert(&d.id, d);
                continue;
            };
            assert_eq!(d.event, earlier.event, "seed {seed}: event {} sent twice, differently", d.id);
            // A later suite took over from a killed one; the same suite sends again only after a cut stopped its
            // relay between publishing and marking.
            let after_cut = cuts.iter().any(|c| *c + LISTENER_LAG_MAX >= earlier.at && *c <= d.at);
            assert!(
                d.suite != earlier.suite || after_cut,
                "seed {seed}: suite {} sent event {} twice with no fault in between",
                d.suite,
                d.id
            );
            repeats += 1;
        }
        repeats
    }
}

/// `table`'s rows of `skus` where `filter` holds, as id → (on_hand, reserved, committed) deltas.
async fn deltas(db_url: &str, table: &str, skus: &[String], filter: &str) -> BTreeMap<String, (i64, i64, i64)> {
    let sql = format!(
        "SELECT id, on_hand_delta, reserved_delta, committed_delta FROM {table} WHERE sku IN ('{}') AND {filter}",
        skus.join("', '")
    );
    let rows = stockroom_e2e::rows(db_url, &sql).await;
    let delta = |r: &stockroom_store::Row, i| r.opt_int(i).expect("a delta").unwrap_or(0);
    rows.iter().map(|r| (r.text(0).expect("an id"), (delta(r, 1), delta(r, 2), delta(r, 3)))).collect()
}

/// A TCP link to PostgreSQL that can be cut, as a store restart cuts its clients: every open connection is dropped
/// and new ones are refused until the store is back.
struct FaultyLink {
    url: String,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    down: Arc<tokio::sync::RwLock<()>>,
}

impl FaultyLink {
    async fn start(db_url: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the link");
        let port = listener.local_addr().expect("its address").port();
        let (url, server) = stockroom_e2e::via(db_url, &format!("127.0.0.1:{port}"));
        let connections: Arc<tokio::sync::Mutex<JoinSet<()>>> = Arc::default();
        let down: Arc<tokio::sync::RwLock<()>> = Arc::default();
        let (held, gate) = (connections.clone(), down.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                // While the store is "restarting", a connect is accepted and dropped at once.
                let Ok(_up) = gate.try_read() else { continue };
                let server = server.clone();
                held.lock().await.spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&server).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { url, connections, down }
    }

    /// Drops every connection and refuses new ones for `outage`.
    async fn cut(&self, outage: Duration) {
        let _down = self.down.write().await;
        self.connections.lock().await.abort_all();
        tokio::time::sleep(outage).await;
    }
}
