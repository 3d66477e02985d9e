//! The executor: the shop's HTTP client against the suite, turning the planner's actions into requests and
//! counting what the server answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::catalogue::{CATALOGUE, LOCATIONS, POLICIES, STORE, target};
use super::planner::{Action, Fate, FlashSale, Order, Planner, Restock};

/// Actions in flight at most; past it the generator's clock waits instead of piling up requests.
const IN_FLIGHT_MAX: usize = 512;
/// How long a stop waits for the actions in flight before it drops them.
const DRAIN_SECONDS: u64 = 10;
/// How long the shop waits for the suite to answer `/readyz` before giving up.
const READY_SECONDS: u64 = 30;

/// What the server answered, reduced to what the shop acts on.
enum Answer {
    Done(Value),
    /// A business answer the shop expects now and then (409 insufficient_stock, 410 reservation_expired).
    Refused,
    /// Logged already.
    Failed,
}

#[derive(Default)]
pub(super) struct Stats {
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
pub(super) struct Shop {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) rate: u64,
    pub(super) stats: Stats,
    pub(super) stop: watch::Sender<bool>,
}

impl Shop {
    pub(super) async fn drive(self: Arc<Self>, mut planner: Planner, stop: impl std::future::Future<Output = ()>) {
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
