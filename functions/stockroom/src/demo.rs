//! `stockroom demo`: the suite (`crate::serve`) plus a small seeded shop that drives it over its own HTTP API on
//! loopback, so the dashboard at `/` moves within seconds of the first command. Every movement goes through the
//! same handlers, ledger, outbox, live feed and analytics as real traffic: nothing is written behind the API's back.
//!
//! Two halves. [`Planner`] is pure and owns the seeded generator: tick by tick it decides what happens (which
//! order, which SKUs and how many, the order's fate and its delays, when to book expiries, when to look for low
//! stock, when a flash sale starts). The executor ([`Shop`]) turns those plans into requests, concurrently, and
//! counts what the server answered. The same seed gives the same plans; what the server answers (a refusal when a
//! SKU ran out, which SKUs are low at a restock check) depends on timing, so two runs' ledgers are alike, not
//! identical.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::Method;
use serde_json::{Value, json};
use stockroom_runtime::Settings;
use stockroom_webhooks::WebhookSettings;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Where the demo writes when neither `--database-url` nor `STOCKROOM_DATABASE_URL` names a store: its own file,
/// so invented orders never mix with a real `stockroom.db`. (`cli` applies it only when clap reports the URL as
/// its default value, so an explicit flag or variable always wins.)
pub const DATABASE_URL_DEFAULT: &str = "sqlite://stockroom-demo.db";

/// Actions in flight at most; past it the generator's clock waits instead of piling up requests.
const IN_FLIGHT_MAX: usize = 512;
/// Orders in one flash sale, and the window they arrive in.
const FLASH_ORDERS: usize = 50;
const FLASH_WINDOW_MS: u64 = 2_000;
/// How long a stop waits for the actions in flight before it drops them.
const DRAIN_SECONDS: u64 = 10;
/// How long the shop waits for the suite to answer `/readyz` before giving up.
const READY_SECONDS: u64 = 30;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoSettings {
    /// Seeds every decision the traffic generator makes; the same seed plays the same shop.
    #[arg(long, env = "STOCKROOM_DEMO_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Checkouts per second (1 to 1000); expiry runs, restocks and flash sales come on top.
    #[arg(long, env = "STOCKROOM_DEMO_RATE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// Stop (traffic and server) after this long; unset runs until SIGTERM or Ctrl-C.
    #[arg(long, env = "STOCKROOM_DEMO_DURATION_SECONDS")]
    pub duration_seconds: Option<u64>,
    /// Abandoned carts hold for about this long (two thirds to four thirds of it) before they expire.
    #[arg(long, env = "STOCKROOM_DEMO_ABANDONED_TTL_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub abandoned_ttl_seconds: u64,
}

/// A product and how often shoppers pick it: a few bestsellers and a long tail.
struct Product {
    sku: &'static str,
    weight: u32,
}

const CATALOGUE: [Product; 12] = [
    Product { sku: "TEE-ORG-BLK-M", weight: 30 },
    Product { sku: "TEE-ORG-WHT-M", weight: 18 },
    Product { sku: "HOODIE-GRY-L", weight: 12 },
    Product { sku: "MUG-ENAMEL-WHT", weight: 8 },
    Product { sku: "SOCKS-WOOL-3PK", weight: 6 },
    Product { sku: "CAP-CANVAS-NVY", weight: 5 },
    Product { sku: "TOTE-CANVAS-NAT", weight: 4 },
    Product { sku: "BOTTLE-STEEL-750", weight: 3 },
    Product { sku: "NOTEBOOK-A5-DOT", weight: 2 },
    Product { sku: "BEANIE-MERINO-RST", weight: 2 },
    Product { sku: "POSTER-A2-MAP", weight: 1 },
    Product { sku: "SCARF-LINEN-SAGE", weight: 1 },
];

/// Flash sales are limited drops of quieter products, so a burst of 50 small orders can empty them.
const FLASH_WEIGHT_MAX: u32 = 3;

struct Place {
    id: &'static str,
    name: &'static str,
    priority: i64,
    /// Share of a SKU's opening stock kept here, in percent.
    share_pct: i64,
}

const LOCATIONS: [Place; 3] = [
    Place { id: "wh-east", name: "East warehouse", priority: 1, share_pct: 60 },
    Place { id: "wh-west", name: "West warehouse", priority: 2, share_pct: 30 },
    Place { id: "store-soho", name: "SoHo store", priority: 3, share_pct: 10 },
];
/// In-store sales draw from the shop floor only.
const STORE: usize = 2;

/// A few SKUs with their own alert policy, so the dashboard shows both kinds of "low".
const POLICIES: [(&str, Option<i64>, Option<i64>); 4] = [
    ("TEE-ORG-BLK-M", Some(3), Some(60)),
    ("HOODIE-GRY-L", None, Some(25)),
    ("MUG-ENAMEL-WHT", Some(10), None),
    ("POSTER-A2-MAP", Some(14), Some(5)),
];

/// Units of a SKU to keep: about a minute of its sales at this rate, plus a floor for the long tail, so
/// bestsellers run low and get restocked within the first minutes. (An order averages about 1.9 units.)
fn target(sku: usize, rate: u64) -> i64 {
    let total: u64 = CATALOGUE.iter().map(|p| u64::from(p.weight)).sum();
    10 + (rate * u64::from(CATALOGUE[sku].weight) * 120 / total) as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub sku: usize,
    pub quantity: i64,
}

/// What happens to a checkout after its hold; delays in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Paid, then shipped.
    Ship { commit_ms: u64, ship_ms: u64 },
    /// Paid; it waits in the warehouse.
    Keep { commit_ms: u64 },
    /// Paid, then sent back.
    Return { commit_ms: u64, return_ms: u64 },
    /// Cancelled at checkout.
    Cancel { cancel_ms: u64 },
    /// Left in the cart: the hold runs out.
    Abandon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub number: u64,
    pub lines: Vec<Line>,
    /// Sold over the counter: drawn from the store only.
    pub in_store: bool,
    pub ttl_seconds: u64,
    pub fate: Fate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashOrder {
    pub delay_ms: u64,
    /// Multiplied by the sale's scale, which follows the stock on hand when it starts.
    pub quantity: i64,
    /// Left in the cart (with an abandoned cart's TTL) instead of paid at once.
    pub abandon: bool,
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashSale {
    pub number: u64,
    pub sku: usize,
    pub orders: Vec<FlashOrder>,
}

/// For one SKU at a restock check: where a delivery would go and how full it would fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restock {
    pub location: usize,
    pub fill_pct: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Checkout(Order),
    /// Cloud Scheduler's job, run as often as the cloud would: books lapsed holds as expired.
    Expire,
    /// Looks at every SKU and restocks those under a quarter of their target (not the ones in `skip`: a flash
    /// sale's SKU stays sold out until its own restock). One plan per SKU, drawn whether or not it is used.
    RestockCheck {
        plans: Vec<Restock>,
        skip: Vec<usize>,
    },
    FlashSale(FlashSale),
    /// The delivery after a flash sale.
    FlashRestock {
        sku: usize,
    },
}

/// Every decision of the demo, from one seeded generator. Pure: ticks in, actions out.
///
/// ChaCha8 (rand_chacha) rather than `SmallRng` or a hand-rolled xorshift: it is already in the build through
/// `rand`, and its stream for a seed is reproducible on every platform (`SmallRng`'s algorithm may change between
/// releases), which is what "the same seed plays the same shop" needs.
pub struct Planner {
    rng: ChaCha8Rng,
    rate: u64,
    abandoned_ttl_seconds: u64,
    tick: u64,
    orders: u64,
    flash_sales: u64,
    /// (due tick, sku): flash-sale restocks to come.
    flash_restocks: Vec<(u64, usize)>,
}

impl Planner {
    pub fn new(seed: u64, rate: u32, abandoned_ttl_seconds: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            rate: u64::from(rate.max(1)),
            abandoned_ttl_seconds: abandoned_ttl_seconds.max(1),
            tick: 0,
            orders: 0,
            flash_sales: 0,
            flash_restocks: Vec::new(),
        }
    }

    /// Opening stock per SKU and location: the target split by location share, give or take a fifth.
    pub fn opening(&mut self) -> Vec<(usize, usize, i64)> {
        let mut out = Vec::new();
        for sku in 0..CATALOGUE.len() {
            for (location, place) in LOCATIONS.iter().enumerate() {
                let jitter = self.rng.gen_range(80..=120);
                out.push((sku, location, (target(sku, self.rate) * place.share_pct * jitter / 10_000).max(1)));
            }
        }
        out
    }

    fn ticks(&self, seconds: u64) -> u64 {
        self.rate * seconds
    }

    /// What happens at the next tick: the scheduled work that falls due, then one shopper.
    pub fn next_actions(&mut self) -> Vec<Action> {
        let n = self.tick;
        self.tick += 1;
        let mut out = Vec::new();
        if n % self.ticks(3) == self.ticks(3) - 1 {
            out.push(Action::Expire);
        }
        let due: Vec<usize> = self.flash_restocks.iter().filter(|(at, _)| *at <= n).map(|(_, sku)| *sku).collect();
        self.flash_restocks.retain(|(at, _)| *at > n);
        out.extend(due.into_iter().map(|sku| Action::FlashRestock { sku }));
        if n % self.ticks(5) == self.ticks(2) {
            let plans = (0..CATALOGUE.len())
                .map(|_| Restock { location: self.location(), fill_pct: self.rng.gen_range(80..=110) })
                .collect();
            let skip = self.flash_restocks.iter().map(|(_, sku)| *sku).collect();
            out.push(Action::RestockCheck { plans, skip });
        }
        // The first flash sale comes early, so a newcomer sees one; then one a minute.
        if n >= self.ticks(5) && (n - self.ticks(5)).is_multiple_of(self.ticks(60)) {
            let sale = self.flash_sale();
            self.flash_restocks.push((n + self.ticks(20), sale.sku));
            out.push(Action::FlashSale(sale));
        }
        out.push(Action::Checkout(self.order()));
        out
    }

    fn order(&mut self) -> Order {
        self.orders += 1;
        let count = pick(&mut self.rng, &[(1, 60), (2, 30), (3, 10)]);
        let mut lines: Vec<Line> = Vec::new();
        for _ in 0..count {
            let sku = self.product();
            // A second pick of the same product is a second unit of it, as a shopper's cart would merge it.
            match lines.iter_mut().find(|l| l.sku == sku) {
                Some(line) => line.quantity += 1,
                None => lines.push(Line { sku, quantity: pick(&mut self.rng, &[(1, 80), (2, 15), (3, 5)]) }),
            }
        }
        let in_store = self.rng.gen_bool(0.1);
        let fate = match pick(&mut self.rng, &[(0, 52), (1, 16), (2, 7), (3, 7), (4, 18)]) {
            0 => Fate::Ship { commit_ms: self.rng.gen_range(300..4_000), ship_ms: self.rng.gen_range(1_000..8_000) },
            1 => Fate::Keep { commit_ms: self.rng.gen_range(300..4_000) },
            2 => {
                Fate::Return { commit_ms: self.rng.gen_range(300..4_000), return_ms: self.rng.gen_range(2_000..10_000) }
            }
            3 => Fate::Cancel { cancel_ms: self.rng.gen_range(500..5_000) },
            _ => Fate::Abandon,
        };
        let ttl_seconds = match fate {
            Fate::Abandon => self.abandoned_ttl(),
            _ => self.rng.gen_range(60..=300),
        };
        Order { number: self.orders, lines, in_store, ttl_seconds, fate }
    }

    fn abandoned_ttl(&mut self) -> u64 {
        let t = self.abandoned_ttl_seconds;
        self.rng.gen_range((t * 2 / 3).max(1)..=(t * 4 / 3).max(1))
    }

    fn flash_sale(&mut self) -> FlashSale {
        self.flash_sales += 1;
        let quiet: Vec<(usize, u32)> =
            CATALOGUE.iter().enumerate().filter(|(_, p)| p.weight <= FLASH_WEIGHT_MAX).map(|(i, _)| (i, 1)).collect();
        let sku = pick(&mut self.rng, &quiet);
        let orders = (0..FLASH_ORDERS)
            .map(|_| {
                let delay_ms = self.rng.gen_range(0..FLASH_WINDOW_MS);
                let quantity = self.rng.gen_range(1..=2);
                let abandon = self.rng.gen_bool(0.1);
                let ttl_seconds = if abandon { self.abandoned_ttl() } else { 300 };
                FlashOrder { delay_ms, quantity, abandon, ttl_seconds }
            })
            .collect();
        FlashSale { number: self.flash_sales, sku, orders }
    }

    fn product(&mut self) -> usize {
        let weights: Vec<(usize, u32)> = CATALOGUE.iter().enumerate().map(|(i, p)| (i, p.weight)).collect();
        pick(&mut self.rng, &weights)
    }

    fn location(&mut self) -> usize {
        let weights: Vec<(usize, u32)> =
            LOCATIONS.iter().enumerate().map(|(i, p)| (i, p.share_pct.unsigned_abs() as u32)).collect();
        pick(&mut self.rng, &weights)
    }
}

/// A weighted choice among `(value, weight)`.
fn pick<T: Copy>(rng: &mut ChaCha8Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen_range(0..total.max(1));
    for (value, weight) in choices {
        if roll < *weight {
            return *value;
        }
        roll -= weight;
    }
    choices[choices.len() - 1].0
}

/// What the server answered, reduced to what the shop acts on.
enum Answer {
    Done(Value),
    /// A business answer the shop expects now and then (409 insufficient_stock, 410 reservation_expired).
    Refused,
    /// Logged already.
    Failed,
}

#[derive(Default)]
struct Stats {
    holds: AtomicU64,
    commits: AtomicU64,
    fulfils: AtomicU64,
    releases: AtomicU64,
    expiries: AtomicU64,
    restocks: AtomicU64,
    flash_sales: AtomicU64,
    refusals: AtomicU64,
    errors: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn log(&self, message: &str) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            holds = get(&self.holds),
            commits = get(&self.commits),
            fulfils = get(&self.fulfils),
            releases = get(&self.releases),
            expiries = get(&self.expiries),
            restocks = get(&self.restocks),
            flash_sales = get(&self.flash_sales),
            refusals = get(&self.refusals),
            errors = get(&self.errors),
            "{message}"
        );
    }
}

/// The executor: the shop's HTTP client against the suite, its counters, and the stop signal its tasks watch.
struct Shop {
    http: reqwest::Client,
    base: String,
    rate: u64,
    stats: Stats,
    stop: watch::Sender<bool>,
}

/// Serves the suite on `listener` and drives demo traffic at it until `shutdown` completes or the duration
/// passes; then drains the shop, stops the server and waits for it.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    webhooks: WebhookSettings,
    demo: DemoSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let base = format!("http://{}", loopback(listener.local_addr()?));
    eprintln!("dashboard: {base}/");
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::serve(listener, settings, webhooks, async move {
        let _ = server_stopped.await;
    }));
    let shop = Arc::new(Shop {
        // No proxy: the suite is on loopback, whatever HTTP_PROXY says.
        http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?,
        base,
        rate: u64::from(demo.rate),
        stats: Stats::default(),
        stop: watch::channel(false).0,
    });
    let limit = demo.duration_seconds.map(Duration::from_secs);
    let stop = async move {
        match limit {
            Some(limit) => {
                tokio::select! {
                    () = shutdown => {},
                    () = tokio::time::sleep(limit) => {},
                }
            }
            None => shutdown.await,
        }
    };
    tracing::info!(
        seed = demo.seed,
        rate = demo.rate,
        duration_seconds = demo.duration_seconds,
        "demo traffic starting"
    );
    tokio::select! {
        // The server ending on its own (a store it cannot open) ends the demo with its error.
        ended = &mut server => return ended?,
        () = shop.clone().drive(Planner::new(demo.seed, demo.rate, demo.abandoned_ttl_seconds), stop) => {},
    }
    let _ = stop_server.send(());
    server.await?
}

/// The address to reach a listener from this machine: loopback when it listens on every interface.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

impl Shop {
    async fn drive(self: Arc<Self>, mut planner: Planner, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        tokio::select! {
            ready = self.wait_ready() => if !ready { return },
            () = &mut stop => return,
        }
        self.open(&mut planner).await;
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
        let mut tasks = JoinSet::new();
        let mut clock = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate as f64));
        clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut summary_at = Instant::now() + Duration::from_secs(10);
        'ticks: loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                _ = clock.tick() => {},
            }
            while tasks.try_join_next().is_some() {}
            for action in planner.next_actions() {
                let permit = tokio::select! {
                    biased;
                    () = &mut stop => break 'ticks,
                    permit = in_flight.clone().acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break 'ticks };
                let shop = self.clone();
                tasks.spawn(async move {
                    shop.perform(action).await;
                    drop(permit);
                });
            }
            if Instant::now() >= summary_at {
                self.stats.log("demo traffic");
                summary_at += Duration::from_secs(10);
            }
        }
        // Pending steps (a commit due in two seconds) are dropped; the requests already sent finish.
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(Duration::from_secs(DRAIN_SECONDS), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("demo actions still running after {DRAIN_SECONDS} s; dropped");
            tasks.shutdown().await;
        }
        self.expire().await;
        self.stats.log("demo finished");
    }

    async fn wait_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(READY_SECONDS);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::error!("the suite did not become ready in {READY_SECONDS} s; no demo traffic");
        false
    }

    /// Locations, policies and opening stock. Opening stock is `set`, not added, so a second demo over the same
    /// database starts from the same shelves instead of piling stock on the first run's.
    async fn open(&self, planner: &mut Planner) {
        for place in &LOCATIONS {
            let body = json!({ "name": place.name, "priority": place.priority });
            self.call(Method::PUT, &format!("/v1/locations/{}", place.id), "location", Some(&body), false).await;
        }
        let changes: Vec<Value> = planner
            .opening()
            .into_iter()
            .map(|(sku, location, units)| {
                json!({ "sku": CATALOGUE[sku].sku, "location": LOCATIONS[location].id, "set": units,
                        "reason": "opening stock", "reference": "demo-opening" })
            })
            .collect();
        let body = json!({ "changes": changes });
        self.call(Method::POST, "/v1/adjustments", "opening stock", Some(&body), true).await;
        for (sku, low_stock_days, reorder_point) in POLICIES {
            let body = json!({ "low_stock_days": low_stock_days, "reorder_point": reorder_point });
            self.call(Method::PUT, &format!("/v1/skus/{sku}/policy"), "policy", Some(&body), false).await;
        }
        tracing::info!(skus = CATALOGUE.len(), locations = LOCATIONS.len(), "demo shop open");
    }

    async fn perform(self: Arc<Self>, action: Action) {
        match action {
            Action::Checkout(order) => self.checkout(order).await,
            Action::Expire => self.expire().await,
            Action::RestockCheck { plans, skip } => self.restock_check(&plans, &skip).await,
            Action::FlashSale(sale) => self.flash_sale(sale).await,
            Action::FlashRestock { sku } => {
                self.restock(&[(sku, 0, target(sku, self.rate))], "flash sale restock").await;
            }
        }
    }

    async fn checkout(&self, order: Order) {
        let lines: Vec<Value> = order
            .lines
            .iter()
            .map(|l| match order.in_store {
                true => json!({ "sku": CATALOGUE[l.sku].sku, "quantity": l.quantity, "location": LOCATIONS[STORE].id }),
                false => json!({ "sku": CATALOGUE[l.sku].sku, "quantity": l.quantity }),
            })
            .collect();
        let reference = format!("order-{:06}", order.number);
        let body = json!({ "lines": lines, "ttl_seconds": order.ttl_seconds, "reference": reference });
        let Some(id) = self.hold(&body).await else { return };
        match order.fate {
            Fate::Ship { commit_ms, ship_ms } => {
                if self.pause(commit_ms).await && self.step(&id, "commit").await && self.pause(ship_ms).await {
                    self.step(&id, "fulfil").await;
                }
            }
            Fate::Keep { commit_ms } => {
                if self.pause(commit_ms).await {
                    self.step(&id, "commit").await;
                }
            }
            Fate::Return { commit_ms, return_ms } => {
                if self.pause(commit_ms).await && self.step(&id, "commit").await && self.pause(return_ms).await {
                    self.step(&id, "release").await;
                }
            }
            Fate::Cancel { cancel_ms } => {
                if self.pause(cancel_ms).await {
                    self.step(&id, "release").await;
                }
            }
            Fate::Abandon => {}
        }
    }

    /// Places a hold; its reservation id when it was accepted.
    async fn hold(&self, body: &Value) -> Option<String> {
        match self.call(Method::POST, "/v1/reservations", "hold", Some(body), false).await {
            Answer::Done(held) => {
                Stats::add(&self.stats.holds, 1);
                held["reservation_id"].as_str().map(str::to_owned)
            }
            Answer::Refused | Answer::Failed => None,
        }
    }

    /// `commit`, `fulfil` or `release`; whether it was done.
    async fn step(&self, id: &str, step: &'static str) -> bool {
        let path = format!("/v1/reservations/{id}/{step}");
        let done = matches!(self.call(Method::POST, &path, step, None, false).await, Answer::Done(_));
        if done {
            let counter = match step {
                "commit" => &self.stats.commits,
                "fulfil" => &self.stats.fulfils,
                _ => &self.stats.releases,
            };
            Stats::add(counter, 1);
        }
        done
    }

    async fn expire(&self) {
        let path = "/jobs/expire-reservations";
        let req = self.http.post(format!("{}{path}", self.base)).header("X-CloudScheduler", "true");
        if let Answer::Done(body) = self.answer(req, "expire job").await {
            Stats::add(&self.stats.expiries, body["expired"].as_u64().unwrap_or(0));
        }
    }

    async fn restock_check(&self, plans: &[Restock], skip: &[usize]) {
        let skus: Vec<&str> = CATALOGUE.iter().map(|p| p.sku).collect();
        let path = format!("/v1/stock?skus={}", skus.join(","));
        let Answer::Done(levels) = self.call(Method::GET, &path, "stock", None, false).await else { return };
        let mut deliveries = Vec::new();
        for (sku, plan) in plans.iter().enumerate() {
            if skip.contains(&sku) {
                continue;
            }
            let available = levels
                .as_array()
                .and_then(|all| all.iter().find(|s| s["sku"] == CATALOGUE[sku].sku))
                .and_then(|s| s["total"]["available"].as_i64())
                .unwrap_or(0);
            let target = target(sku, self.rate);
            if available < target / 4 {
                deliveries.push((sku, plan.location, (target * plan.fill_pct / 100 - available).max(1)));
            }
        }
        if !deliveries.is_empty() {
            self.restock(&deliveries, "restock").await;
        }
    }

    /// One delivery: `(sku, location, units)` added in one atomic adjustment.
    async fn restock(&self, deliveries: &[(usize, usize, i64)], reason: &str) {
        let changes: Vec<Value> = deliveries
            .iter()
            .map(|(sku, location, units)| {
                json!({ "sku": CATALOGUE[*sku].sku, "location": LOCATIONS[*location].id, "delta": units,
                        "reason": reason })
            })
            .collect();
        let body = json!({ "changes": changes });
        if let Answer::Done(_) = self.call(Method::POST, "/v1/adjustments", "restock", Some(&body), true).await {
            Stats::add(&self.stats.restocks, changes_len(&body));
        }
    }

    /// Fifty small orders for one SKU within two seconds, each paid at once (a few carts are left). Orders grow
    /// with the stock on hand when the sale starts, so the burst asks for about a quarter more than there is.
    async fn flash_sale(self: Arc<Self>, sale: FlashSale) {
        let sku = CATALOGUE[sale.sku].sku;
        let Answer::Done(level) = self.call(Method::GET, &format!("/v1/stock/{sku}"), "stock", None, false).await
        else {
            return;
        };
        let available = level["total"]["available"].as_i64().unwrap_or(0).max(0);
        let scale = ((available + 59) / 60).max(1);
        tracing::info!(sku, available, orders = sale.orders.len(), "demo flash sale");
        Stats::add(&self.stats.flash_sales, 1);
        let mut orders = JoinSet::new();
        for (i, order) in sale.orders.into_iter().enumerate() {
            let shop = self.clone();
            let reference = format!("flash-{}-{i:02}", sale.number);
            orders.spawn(async move {
                if !shop.pause(order.delay_ms).await {
                    return;
                }
                let line = json!({ "sku": sku, "quantity": order.quantity * scale });
                let body = json!({ "lines": [line], "ttl_seconds": order.ttl_seconds, "reference": reference });
                if let Some(id) = shop.hold(&body).await
                    && !order.abandon
                {
                    shop.step(&id, "commit").await;
                }
            });
        }
        while orders.join_next().await.is_some() {}
    }

    /// Sleeps `ms`; false when the demo is stopping meanwhile (the caller drops the rest of its steps).
    async fn pause(&self, ms: u64) -> bool {
        let mut stop = self.stop.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => true,
            _ = stop.wait_for(|stopping| *stopping) => false,
        }
    }

    async fn call(&self, method: Method, path: &str, what: &'static str, body: Option<&Value>, key: bool) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(body);
        }
        if key {
            req = req.header("idempotency-key", uuid::Uuid::now_v7().to_string());
        }
        self.answer(req, what).await
    }

    /// Sends `req` and classifies the answer; refusals are counted, failures logged and counted, never retried
    /// (the shop moves on, as a shopper would).
    async fn answer(&self, req: reqwest::RequestBuilder, what: &'static str) -> Answer {
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(what, error = %e, "demo request failed");
                Stats::add(&self.stats.errors, 1);
                return Answer::Failed;
            }
        };
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Answer::Done(body);
        }
        let code = body["error"].as_str().unwrap_or_default();
        if matches!(code, "insufficient_stock" | "reservation_expired") {
            Stats::add(&self.stats.refusals, 1);
            return Answer::Refused;
        }
        // A 5xx, or a 4xx the shop never expects (a 401 when OIDC guards the jobs, say).
        tracing::warn!(what, status = status.as_u16(), error = code, "demo request answered with an error");
        Stats::add(&self.stats.errors, 1);
        Answer::Failed
    }
}

fn changes_len(body: &Value) -> u64 {
    body["changes"].as_array().map_or(0, |c| c.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(seed: u64, ticks: usize) -> Vec<Action> {
        let mut planner = Planner::new(seed, 20, 30);
        (0..ticks).flat_map(|_| planner.next_actions()).collect()
    }

    #[test]
    fn the_same_seed_plays_the_same_shop() {
        assert_eq!(plans(42, 3_000), plans(42, 3_000));
        assert_ne!(plans(42, 3_000), plans(43, 3_000));
    }

    #[test]
    fn two_minutes_of_plans_hold_every_kind_of_traffic() {
        let actions = plans(7, 20 * 120);
        let fates: Vec<Fate> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Checkout(o) => Some(o.fate),
                _ => None,
            })
            .collect();
        assert!(fates.iter().any(|f| matches!(f, Fate::Ship { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Keep { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Return { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Cancel { .. })));
        assert!(fates.iter().any(|f| matches!(f, Fate::Abandon)));
        let count = |pred: fn(&Action) -> bool| actions.iter().filter(|a| pred(a)).count();
        assert_eq!(count(|a| matches!(a, Action::FlashSale(_))), 2, "one at 5 s, one at 65 s");
        assert_eq!(count(|a| matches!(a, Action::FlashRestock { .. })), 2);
        assert_eq!(count(|a| matches!(a, Action::Expire)), 40);
        assert_eq!(count(|a| matches!(a, Action::RestockCheck { .. })), 24);
    }

    #[test]
    fn bestsellers_sell_far_more_than_the_long_tail() {
        let mut units = [0i64; CATALOGUE.len()];
        for action in plans(1, 20_000) {
            if let Action::Checkout(order) = action {
                for line in order.lines {
                    units[line.sku] += line.quantity;
                }
            }
        }
        assert!(units[0] > 10 * units[CATALOGUE.len() - 1], "{units:?}");
    }

    #[test]
    fn flash_sales_pick_quiet_products_and_hold_back_their_restock() {
        let actions = plans(3, 20 * 30);
        let sale = actions.iter().find_map(|a| match a {
            Action::FlashSale(s) => Some(s.clone()),
            _ => None,
        });
        let Some(sale) = sale else { panic!("no flash sale in 30 s") };
        assert!(CATALOGUE[sale.sku].weight <= FLASH_WEIGHT_MAX);
        assert_eq!(sale.orders.len(), FLASH_ORDERS);
        assert!(sale.orders.iter().all(|o| o.delay_ms < FLASH_WINDOW_MS));
        let skipped =
            actions.iter().any(|a| matches!(a, Action::RestockCheck { skip, .. } if skip.contains(&sale.sku)));
        assert!(skipped, "a restock check during the sale leaves its SKU sold out");
    }

    #[test]
    fn every_demo_name_is_a_valid_sku_and_location() {
        for p in &CATALOGUE {
            assert!(stockroom_domain::Sku::parse(p.sku).is_ok(), "{}", p.sku);
        }
        for l in &LOCATIONS {
            assert!(stockroom_domain::Location::parse(l.id).is_ok(), "{}", l.id);
        }
    }

    #[test]
    fn a_listener_on_every_interface_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(loopback(any).to_string(), "127.0.0.1:8080");
    }
}
