//! The harness for Stockroom's end-to-end tests: a fresh database per test (a SQLite file in its own folder, a
//! PostgreSQL database or a Spanner emulator database made for the test and dropped after), the suite served on
//! port 0 in-process or as a child process, and a few request helpers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;

/// Webhook secrets the in-process suites accept: the current one and the one being rotated out.
pub const SHOPIFY_TEST_SECRETS: &str = "shpss_current_secret,shpss_previous_secret";

/// The PostgreSQL server tests make their databases on. `.ci/run` starts one on 127.0.0.1:5432 if none runs.
pub fn postgres_admin_url() -> String {
    std::env::var("STOCKROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// Spanner's PostgreSQL dialect, on Google's emulator.
    Spanner,
}

/// `host:port` (gRPC) of the Spanner emulator the tests use: `SPANNER_EMULATOR_HOST`, or one that
/// `scripts/spanner-emulator` starts on 127.0.0.1:9010 when nothing is named (and leaves running).
pub fn spanner_emulator_host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        if let Some(host) = std::env::var("SPANNER_EMULATOR_HOST").ok().filter(|h| !h.trim().is_empty()) {
            return host;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/spanner-emulator");
        let out = Command::new(&script).output().unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| l.strip_prefix("SPANNER_EMULATOR_HOST="))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{} printed no SPANNER_EMULATOR_HOST: {text}", script.display()))
    })
    .clone()
}

/// The suite's settings for a test database: the documented defaults, the emulator for `spanner://`.
pub fn settings_for(url: &str) -> stockroom_runtime::Settings {
    let mut settings = stockroom_runtime::Settings::for_database(url.to_owned());
    if url.starts_with("spanner:") {
        settings.spanner_emulator_host = Some(spanner_emulator_host());
    }
    settings
}

/// Spanner tests take turns, each holding this for its whole run (SQLite and PostgreSQL tests run beside them):
/// the emulator applies one read-write transaction at a time across all its databases, so Spanner tests at once
/// only queue behind each other, and a child process of one (killed, restarted) would be starved by the others.
pub async fn spanner_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// A database that exists for one test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pg_name: Option<String>,
    dir: Option<PathBuf>,
    /// Spanner: the database to drop after.
    spanner: bool,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("stockroom-test-{id}"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}", dir.join("stockroom.db").display());
                Self { backend, url, pg_name: None, dir: Some(dir), spanner: false }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("stockroom_test_{id}");
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin} (run .ci/run): {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
                Self { backend, url: format!("{base}/{name}"), pg_name: Some(name), dir: None, spanner: false }
            }
            Backend::Spanner => {
                // Database ids: a letter, then at most 29 of [a-z0-9_-]. The store makes it on first connect.
                let url =
                    format!("spanner://projects/stockroom-test/instances/e2e/databases/t{}", &id[id.len() - 29..]);
                Self { backend, url, pg_name: None, dir: None, spanner: true }
            }
        }
    }

    /// Waits until nothing a killed process sent can still land, so a test reads the database as the kill left it.
    /// A SIGKILL does not stop what the server already handed on: PostgreSQL goes on with a backend's `COMMIT`, and
    /// the Spanner emulator with a commit it received, after the client is gone. SQLite commits in the process, so
    /// its file is settled once the process is dead.
    pub async fn settle_after_kill(&self) {
        const WAIT_MAX: Duration = Duration::from_secs(60);
        let started = std::time::Instant::now();
        match (self.backend, &self.pg_name) {
            (Backend::Postgres, Some(name)) => {
                // A backend still busy (or inside a transaction) for this database may commit; an idle one, whose
                // client is dead, cannot start anything.
                let mut conn = sqlx::PgConnection::connect(&postgres_admin_url()).await.expect("PostgreSQL admin");
                loop {
                    let busy: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
                         AND state IS DISTINCT FROM 'idle'",
                    )
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("pg_stat_activity");
                    if busy == 0 {
                        return;
                    }
                    assert!(started.elapsed() < WAIT_MAX, "{busy} backends of a killed process still busy");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (Backend::Spanner, _) => {
                // The emulator runs one read-write transaction at a time: once one of ours commits, the killed
                // process's last transaction has either committed or been aborted.
                let db = stockroom_store::Inspect::open(&settings_for(&self.url).store()).await.expect("open");
                loop {
                    match db.execute("DELETE FROM outbox WHERE id = 'settle-after-kill'").await {
                        Ok(_) => return,
                        Err(e) => assert!(started.elapsed() < WAIT_MAX, "no transaction got through: {e:?}"),
                    }
                }
            }
            _ => {}
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if std::mem::take(&mut self.spanner) {
            let settings = settings_for(&self.url).store();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(db) = stockroom_store::Inspect::open(&settings).await {
                            let _ = db.drop_database().await;
                        }
                    });
                }
            })
            .join();
        }
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any async context we can rely on: a small runtime of its own does the DROP.
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// HTTP helpers shared by the in-process and the child-process apps.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn error_code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Self { base: format!("http://{addr}"), http }
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Reply { status, body, headers }
    }

    /// Like `json`, but a failed connection is an `Err` instead of a panic (for tests that kill the server).
    pub async fn try_json(&self, method: &str, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body, headers })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], None).await
    }

    pub async fn json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.send(method, path, &[("content-type", "application/json")], Some(body.to_string().into_bytes())).await
    }

    pub async fn json_with_key(&self, method: &str, path: &str, key: &str, body: &Value) -> Reply {
        let headers = [("content-type", "application/json"), ("idempotency-key", key)];
        self.send(method, path, &headers, Some(body.to_string().into_bytes())).await
    }

    /// Creates a location; panics unless it was created or updated.
    pub async fn location(&self, id: &str, priority: i64) {
        let r = self.json("PUT", &format!("/v1/locations/{id}"), &json!({ "name": id, "priority": priority })).await;
        assert!(r.status == 200 || r.status == 201, "PUT location {id}: {r:?}");
    }

    /// Adds `delta` units of `sku` at `location`; panics unless applied.
    pub async fn receive(&self, sku: &str, location: &str, delta: i64) -> Reply {
        let key = uuid::Uuid::now_v7().to_string();
        let body = json!({ "changes": [{ "sku": sku, "location": location, "delta": delta, "reason": "received" }] });
        let r = self.json_with_key("POST", "/v1/adjustments", &key, &body).await;
        assert_eq!(r.status, 200, "receive {sku}@{location}: {r:?}");
        r
    }

    /// Holds `quantity` of `sku` wherever it can; the raw reply.
    pub async fn hold(&self, sku: &str, quantity: i64) -> Reply {
        self.json("POST", "/v1/reservations", &json!({ "lines": [{ "sku": sku, "quantity": quantity }] })).await
    }

    /// `GET /v1/stock/{sku}` body; panics unless 200.
    pub async fn stock(&self, sku: &str) -> Value {
        let r = self.get(&format!("/v1/stock/{sku}")).await;
        assert_eq!(r.status, 200, "stock {sku}: {r:?}");
        r.body
    }

    /// Every movement in the ledger, following `next`.
    pub async fn all_movements(&self, filter: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let r = self.get(&format!("/v1/movements?limit=1000{filter}{after}")).await;
            assert_eq!(r.status, 200, "{r:?}");
            out.extend(r.body["movements"].as_array().cloned().unwrap_or_default());
            match r.body["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return out,
            }
        }
    }
}

/// The suite served in this process on port 0, stopped (gracefully) on drop.
pub struct TestApp {
    pub api: Api,
    pub db: TestDb,
    /// The suite's clock: the wall clock, which a test moves ahead instead of waiting.
    pub clock: std::sync::Arc<stockroom_store::OffsetClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_on(TestDb::new(backend).await).await
    }

    pub async fn spawn_on(db: TestDb) -> Self {
        Self::spawn_configured(db, |_| {}).await
    }

    /// With settings changed by `configure` (relay interval, OIDC audience, …).
    pub async fn spawn_configured(db: TestDb, configure: impl FnOnce(&mut stockroom_runtime::Settings)) -> Self {
        // The suite's JSON logs go to stdout, which the test harness does not capture: opt in to see them.
        if std::env::var_os("STOCKROOM_TEST_LOG").is_some() {
            stockroom_runtime::logging::init(None);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut settings = settings_for(&db.url);
        let clock = std::sync::Arc::new(stockroom_store::OffsetClock::default());
        settings.clock = Some(clock.clone());
        // Background work reacts fast in tests; a test that wants it off sets 0.
        settings.relay_interval_ms = 20;
        settings.commands_interval_ms = 20;
        configure(&mut settings);
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = ready_tx.send(());
            let webhooks = stockroom_webhooks::WebhookSettings {
                shopify_secrets: SHOPIFY_TEST_SECRETS.into(),
                shopify_default_location: String::new(),
            };
            if let Err(e) = stockroom::serve(listener, settings, webhooks, shutdown).await {
                panic!("serve: {e}");
            }
        });
        let _ = ready_rx.await;
        let app = Self { api: Api::new(addr), db, clock, stop: Some(stop), task: Some(task) };
        app.wait_ready().await;
        app
    }

    /// The aggregator function alone (as Cloud Run runs it: `inventory-events` in on `/events` and
    /// `/pubsub/push`, analytics out), with no background relay so that its outbox can be inspected.
    pub async fn spawn_aggregator(db: TestDb) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut settings = settings_for(&db.url);
        let clock = std::sync::Arc::new(stockroom_store::OffsetClock::default());
        settings.clock = Some(clock.clone());
        let services = settings.services().await.expect("services");
        let mut limits = settings.limits();
        limits.drain_seconds = 1;
        let app = stockroom_runtime::with_edges(
            stockroom_aggregator::router(stockroom_aggregator::Aggregator::new(services.clone()))
                .merge(stockroom_runtime::health::router(services.store.clone())),
            &limits,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = stockroom_runtime::run(listener, app, shutdown, &limits).await {
                panic!("aggregator: {e}");
            }
        });
        let app = Self { api: Api::new(addr), db, clock, stop: Some(stop), task: Some(task) };
        app.wait_ready().await;
        app
    }

    /// Moves the suite's time ahead: holds lapse, leases run out, without waiting.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the suite did not become ready");
    }

    /// Stops the server and waits for it; the database stays for a restart with `spawn_on`.
    pub async fn stop(mut self) -> TestDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        TestDb {
            backend: self.db.backend,
            url: self.db.url.clone(),
            pg_name: self.db.pg_name.take(),
            dir: self.db.dir.take(),
            spanner: std::mem::take(&mut self.db.spanner),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The suite as a child process (the real entry point), for tests that kill it without warning.
pub struct ChildApp {
    pub api: Api,
    child: Child,
    /// Every line the child wrote to stdout (its JSON logs), as they arrive.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl std::ops::Deref for ChildApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ChildApp {
    /// Starts `bin serve` on port 0 over `url` and waits until it answers.
    pub async fn spawn(bin: &str, url: &str) -> Self {
        Self::spawn_with(bin, url, &[]).await
    }

    /// The same, with extra environment (settings) for the child.
    pub async fn spawn_with(bin: &str, url: &str, env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = Command::new(bin);
        if url.starts_with("spanner:") {
            command.env("SPANNER_EMULATOR_HOST", spanner_emulator_host());
        }
        let mut child = command
            .arg("serve")
            .env("PORT", "0")
            .env("STOCKROOM_BIND", "127.0.0.1")
            .env("STOCKROOM_DATABASE_URL", url)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stockroom");
        let stdout = child.stdout.take().expect("stdout");
        // The first log lines say where it listens; the rest are drained so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line.clone());
                }
                if !sent
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = v["address"].as_str()
                {
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child logs its address")
            .parse()
            .expect("socket address");
        let app = Self { api: Api::new(addr), child, logs };
        for _ in 0..400 {
            if app.get("/readyz").await.status == 200 {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("child did not become ready");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the child to exit by itself; its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    /// SIGKILL: no drain, no flush, nothing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `child` to exit by itself; its exit status, or `None` if it is still running.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A database URL with its `host:port` swapped for `at` (to reach the store through a link a test controls), and
/// the `host:port` it named.
pub fn via(url: &str, at: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, hostpath) = rest.rsplit_once('@').map_or(("", rest), |(u, h)| (u, h));
    let (host, path) = hostpath.split_once('/').expect("a database path");
    let userinfo = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
    (format!("{scheme}://{userinfo}{at}/{path}"), host.to_owned())
}

/// A small seeded generator (xorshift64*) for workloads that must replay from a printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A seed from `STOCKROOM_TEST_SEED`, else the clock; printed so a failure can be replayed.
    pub fn from_env(test: &str) -> (Self, u64) {
        let seed = std::env::var("STOCKROOM_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
        });
        println!("{test}: STOCKROOM_TEST_SEED={seed}");
        (Self::new(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Checks the ledger against itself: replaying every movement gives each row's on_hand, reserved (as stored,
/// before read-time expiry) and committed. Returns the replayed figures by (sku, location).
pub async fn replayed_levels(api: &Api) -> std::collections::BTreeMap<(String, String), (i64, i64, i64)> {
    let mut levels = std::collections::BTreeMap::new();
    for m in api.all_movements("").await {
        let key = (m["sku"].as_str().unwrap_or("").to_owned(), m["location"].as_str().unwrap_or("").to_owned());
        let e: &mut (i64, i64, i64) = levels.entry(key).or_default();
        e.0 += m["on_hand_delta"].as_i64().unwrap_or(0);
        e.1 += m["reserved_delta"].as_i64().unwrap_or(0);
        e.2 += m["committed_delta"].as_i64().unwrap_or(0);
    }
    levels
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// A subscription to `GET /v1/events/stream`.
pub struct Sse {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Api {
    /// Subscribes to the live feed; returns once the server has answered, so events from then on are seen.
    pub async fn subscribe(&self, query: &str) -> Sse {
        let resp = self.http.get(format!("{}/v1/events/stream{query}", self.base)).send().await.expect("subscribe");
        assert_eq!(resp.status().as_u16(), 200);
        Sse { stream: Box::pin(resp.bytes_stream()), buffer: String::new() }
    }
}

impl Sse {
    /// The next event, or `None` after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { id: String::new(), event: String::new(), data: Value::Null };
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Every event that arrives until `quiet` passes without one.
    pub async fn until_quiet(&mut self, quiet: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next(quiet).await {
            out.push(e);
        }
        out
    }
}

/// `X-Shopify-Hmac-Sha256` for `body` under `secret`.
pub fn shopify_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Api {
    /// Sends a Shopify webhook, signed with `secret` (or unsigned with `None`).
    pub async fn shopify(&self, topic: &str, webhook_id: &str, body: &Value, secret: Option<&str>) -> Reply {
        let raw = body.to_string().into_bytes();
        let signature = secret.map(|s| shopify_signature(s, &raw));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Webhook-Id", webhook_id),
            ("X-Shopify-Shop-Domain", "test.myshopify.com"),
        ];
        if let Some(sig) = signature.as_deref() {
            headers.push(("X-Shopify-Hmac-Sha256", sig));
        }
        self.send("POST", "/webhooks/shopify", &headers, Some(raw)).await
    }

    /// Sends a Stockroom command as a binary-mode CloudEvent to `/events`.
    pub async fn command_event(&self, ty: &str, source: &str, id: &str, data: &Value) -> Reply {
        let headers = [
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-type", ty),
            ("ce-source", source),
            ("ce-id", id),
        ];
        self.send("POST", "/events", &headers, Some(data.to_string().into_bytes())).await
    }
}

/// Rows read directly from a test database, on any store (for what the API does not show: queues, the raw
/// outbox).
pub async fn rows(url: &str, sql: &str) -> Vec<stockroom_store::Row> {
    let db = stockroom_store::Inspect::open(&settings_for(url).store()).await.expect("open the test database");
    db.rows(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// One statement run directly on a test database, in its own transaction.
pub async fn execute(url: &str, sql: &str) -> u64 {
    let db = stockroom_store::Inspect::open(&settings_for(url).store()).await.expect("open the test database");
    db.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// Rows of a table in a test database, counted directly (for queues the API does not show).
pub async fn count_rows(url: &str, sql: &str) -> i64 {
    rows(url, sql).await.first().and_then(|r| r.int(0).ok()).expect("a count")
}

/// A movement as the outbox publishes it, for tests and benchmarks that feed the aggregator directly.
pub struct MovementSpec<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub at: chrono::DateTime<chrono::Utc>,
    pub sku: &'a str,
    pub location: &'a str,
    /// `adjustment`, `hold`, `commit`, `fulfil`, `release` or `expire`.
    pub kind: &'a str,
    /// (on_hand, reserved, committed) deltas.
    pub deltas: (i64, i64, i64),
    /// (on_hand, reserved, committed) after it; safety stock 0.
    pub after: (i64, i64, i64),
    pub cause: &'a str,
}

impl MovementSpec<'_> {
    /// The structured CloudEvent the outbox would hold for it, built with the catalogue's types.
    pub fn event(&self) -> Value {
        use stockroom_events::event as ev;
        let ty = match self.kind {
            "adjustment" => ev::STOCK_CHANGED,
            "hold" => ev::RESERVATION_HELD,
            "commit" => ev::RESERVATION_COMMITTED,
            "fulfil" => ev::RESERVATION_FULFILLED,
            "release" => ev::RESERVATION_RELEASED,
            _ => ev::RESERVATION_EXPIRED,
        };
        let at = self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let (d, a) = (self.deltas, self.after);
        let data = ev::MovementData {
            movement: ev::Movement {
                id: self.id.to_owned(),
                at: at.clone(),
                sku: self.sku.to_owned(),
                location: self.location.to_owned(),
                kind: self.kind.to_owned(),
                deltas: ev::Deltas { on_hand: d.0, reserved: d.1, committed: d.2 },
                reason: self.kind.to_owned(),
                reference: None,
                cause: Some(self.cause.to_owned()),
            },
            levels: ev::Levels {
                on_hand: a.0,
                reserved: a.1,
                committed: a.2,
                safety_stock: 0,
                available: a.0 - a.1 - a.2,
            },
        };
        stockroom_events::CloudEvent::new(ty, self.id, self.source, data)
            .with_subject(self.sku)
            .with_time(at)
            .to_value()
    }
}
