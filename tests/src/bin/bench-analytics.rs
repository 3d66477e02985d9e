//! The aggregator's throughput and the lag from a sale to the dashboard's figures. Used by
//! `scripts/bench-analytics`.
//!
//! - `throughput`: synthetic movement events recorded through the embedded sink (the [`Aggregator`] over a
//!   [`SqlStore`], the path the relay takes in `stockroom serve`) in batches, then the same events again (all
//!   duplicates, as after a redelivery).
//! - `push`: the same kind of events posted one per request to a running aggregator's `/pubsub/push`, as a
//!   Pub/Sub push subscription delivers them in the cloud, from a number of concurrent clients.
//! - `lag`: against a running `stockroom serve`, one sale at a time (hold, then commit), timed from the commit's
//!   answer to its `reservation.committed` event on `/v1/events/stream`, and to the first
//!   `/v1/analytics/stock-health` that counts it: what the dashboard sees.
//!
//! The HTTP modes only target loopback addresses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use stockroom_aggregator::{Aggregator, observe_structured};
use stockroom_e2e::{Api, MovementSpec, Rng};
use stockroom_runtime::Services;
use stockroom_store::{ObservedEvent, SqlStore, StoreSettings};

type Error = Box<dyn std::error::Error + Send + Sync>;

const LOCATIONS: [&str; 3] = ["wh-east", "wh-west", "store-soho"];
/// How long the lag mode waits for one sale's event, or for the figures that count it.
const WAIT_MAX: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Events/s recorded through the embedded sink (no HTTP), new and then all duplicates.
    Throughput {
        #[arg(long)]
        database_url: String,
        #[command(flatten)]
        workload: Workload,
        /// Events per `record` call (the relay hands over up to 500).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Events/s and request latency posting one event per request to a running aggregator's `/pubsub/push`.
    Push {
        #[arg(long)]
        base: String,
        #[command(flatten)]
        workload: Workload,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Sale → feed and sale → dashboard figures against a running `stockroom serve`.
    Lag {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 200)]
        sales: usize,
        /// Pause between sales, so that the figures measure latency rather than a queue.
        #[arg(long, default_value_t = 20)]
        pause_ms: u64,
        /// A random 0 to this many ms more per pause. Without it, sales paced by a fixed pause fall into step
        /// with the relay's rounds and all wait about as long; at least one relay interval spreads them evenly
        /// over a round.
        #[arg(long, default_value_t = 200)]
        jitter_ms: u64,
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(clap::Args)]
struct Workload {
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 50)]
    skus: usize,
    /// Seeds the workload: the same seed, the same mix of movements.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Args::parse().mode {
        Mode::Throughput { database_url, workload, batch, label } => {
            throughput(&database_url, &workload, batch, &label).await
        }
        Mode::Push { base, workload, clients, label } => push(&base, &workload, clients, &label).await,
        Mode::Lag { base, sales, pause_ms, jitter_ms, label } => lag(&base, sales, pause_ms, jitter_ms, &label).await,
    }
}

fn loopback(base: &str) -> Result<Api, Error> {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").trim_end_matches('/').parse()?;
    if !addr.ip().is_loopback() {
        return Err("bench-analytics only targets loopback addresses".into());
    }
    Ok(Api::new(addr))
}

// ---------------------------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------------------------

/// One (sku, location) row as the ledger would have it, with its open holds and its unshipped sales.
#[derive(Default)]
struct Row {
    on_hand: i64,
    reserved: i64,
    committed: i64,
    holds: Vec<(String, i64)>,
    sales: Vec<(String, i64)>,
}

/// `events` structured CloudEvents as the outbox would publish them: over `skus` skus (a few sell much more
/// than the rest) and three locations, times spread evenly over the last 7 days, each row's levels following
/// from its movements: about a third holds, a third commits (sales), then shipments, cancelled and expired
/// holds, returns and counts, and a restock whenever a row runs low.
fn workload(w: &Workload, now: DateTime<Utc>) -> Vec<Value> {
    let mut rng = Rng::new(w.seed);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let skus: Vec<String> = (0..w.skus.max(1)).map(|i| format!("BENCH-{}-{i:04}", &run[20..])).collect();
    let mut rows: HashMap<(usize, usize), Row> = HashMap::new();
    let start = now - TimeDelta::days(7) + TimeDelta::minutes(1);
    let step_us = (7 * 86_400_000_000_i64 - 120_000_000) / w.events.max(1) as i64;
    let mut out = Vec::with_capacity(w.events);
    let mut orders = 0_u64;
    for n in 0..w.events {
        // Popularity: half the picks go to the first tenth of the skus.
        let sku =
            if rng.below(2) == 0 { rng.below((skus.len() as u64 / 10).max(1)) } else { rng.below(skus.len() as u64) }
                as usize;
        let location = rng.below(LOCATIONS.len() as u64) as usize;
        let row = rows.entry((sku, location)).or_default();
        let available = row.on_hand - row.reserved - row.committed;
        let roll = rng.below(100);
        let q = 1 + rng.below(3) as i64;
        let (kind, deltas, cause) = if available < 10 {
            ("adjustment", (100 + rng.below(100) as i64, 0, 0), None)
        } else if roll < 32
            || ((32..71).contains(&roll) && row.holds.is_empty())
            || ((71..90).contains(&roll) && row.sales.is_empty())
        {
            orders += 1;
            let id = format!("reservation:bench-{run}-{orders}");
            row.holds.push((id.clone(), q));
            ("hold", (0, q, 0), Some(id))
        } else if roll < 62 {
            let (id, q) = row.holds.swap_remove(rng.below(row.holds.len() as u64) as usize);
            row.sales.push((id.clone(), q));
            ("commit", (0, -q, q), Some(id))
        } else if roll < 68 {
            let (id, q) = row.holds.swap_remove(rng.below(row.holds.len() as u64) as usize);
            ("release", (0, -q, 0), Some(id))
        } else if roll < 71 {
            let (id, q) = row.holds.swap_remove(rng.below(row.holds.len() as u64) as usize);
            ("expire", (0, -q, 0), Some(id))
        } else if roll < 86 {
            let (id, q) = row.sales.swap_remove(rng.below(row.sales.len() as u64) as usize);
            ("fulfil", (-q, 0, -q), Some(id))
        } else if roll < 90 {
            let (id, q) = row.sales.swap_remove(rng.below(row.sales.len() as u64) as usize);
            ("release", (0, 0, -q), Some(id))
        } else {
            // A count: a few units found or lost (available is at least 10 here, so nothing goes negative).
            ("adjustment", (rng.below(7) as i64 - 3, 0, 0), None)
        };
        row.on_hand += deltas.0;
        row.reserved += deltas.1;
        row.committed += deltas.2;
        let id = uuid::Uuid::now_v7().to_string();
        let cause = cause.unwrap_or_else(|| "adjustment:bench".to_owned());
        out.push(
            MovementSpec {
                id: &id,
                source: "//stockroom/bench",
                at: start + TimeDelta::microseconds(step_us * n as i64),
                sku: &skus[sku],
                location: LOCATIONS[location],
                kind,
                deltas,
                after: (row.on_hand, row.reserved, row.committed),
                cause: &cause,
            }
            .event(),
        );
    }
    out
}

fn observed(events: &[Value]) -> Result<Vec<ObservedEvent>, Error> {
    events.iter().map(|e| observe_structured(e).map_err(|e| format!("{e:?}").into())).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------------------------

async fn throughput(url: &str, w: &Workload, batch: usize, label: &str) -> Result<(), Error> {
    let batch = batch.max(1);
    let events = observed(&workload(w, Utc::now()))?;
    let store = SqlStore::connect(&StoreSettings::new(url, stockroom_runtime::render)).await?;
    let aggregator = Aggregator::new(Services::local(Arc::new(store), Arc::new(stockroom_store::SystemClock)));
    let mut passes = Vec::new();
    for _ in 0..2 {
        let batches: Vec<Vec<ObservedEvent>> = events.chunks(batch).map(<[_]>::to_vec).collect();
        let started = Instant::now();
        let (mut recorded, mut duplicates, mut crossings) = (0, 0, 0);
        for b in batches {
            let r = aggregator.record(b).await?;
            (recorded, duplicates, crossings) =
                (recorded + r.recorded, duplicates + r.duplicates, crossings + r.crossings);
        }
        passes.push((started.elapsed().as_secs_f64(), recorded, duplicates, crossings));
    }
    let (first, again) = (passes[0], passes[1]);
    if first.1 != events.len() || again.2 != events.len() {
        return Err(format!("recorded {} then {} duplicates of {} events", first.1, again.2, events.len()).into());
    }
    println!(
        "{label:<18} embedded events={} skus={} batch={batch} new={:.0} events/s ({:.2}s, {} crossings) duplicates={:.0} events/s ({:.2}s)",
        events.len(),
        w.skus,
        events.len() as f64 / first.0,
        first.0,
        first.3,
        events.len() as f64 / again.0,
        again.0,
    );
    Ok(())
}

/// The event as a Pub/Sub push request with the CloudEvents binding (`ce-*` attributes, data = the event's data).
fn push_body(event: &Value, n: usize) -> bytes::Bytes {
    let data = base64::engine::general_purpose::STANDARD.encode(event["data"].to_string());
    let envelope = json!({
        "message": {
            "data": data, "messageId": format!("bench-{n}"), "publishTime": event["time"],
            "attributes": {
                "ce-specversion": "1.0", "ce-id": event["id"], "ce-source": event["source"],
                "ce-type": event["type"], "ce-subject": event["subject"], "ce-time": event["time"],
            },
        },
        "subscription": "projects/bench/subscriptions/aggregator",
    });
    bytes::Bytes::from(envelope.to_string())
}

async fn push(base: &str, w: &Workload, clients: usize, label: &str) -> Result<(), Error> {
    let api = loopback(base)?;
    let bodies: Arc<Vec<bytes::Bytes>> =
        Arc::new(workload(w, Utc::now()).iter().enumerate().map(|(n, e)| push_body(e, n)).collect());
    let mut report = format!("{label:<18} push     events={} skus={} clients={clients}", bodies.len(), w.skus);
    for pass in ["new", "duplicates"] {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let senders: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (api, bodies, next) = (api.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(n) else { return Ok::<_, String>(latencies) };
                        let sent = Instant::now();
                        let r = api
                            .http
                            .post(format!("{}/pubsub/push", api.base))
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        let status = r.status();
                        let answer = r.text().await.map_err(|e| e.to_string())?;
                        if status != 200 {
                            return Err(format!("/pubsub/push answered {status}: {answer}"));
                        }
                        latencies.push(sent.elapsed());
                    }
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(bodies.len());
        for s in senders {
            latencies.extend(s.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let p = Percentiles::of(latencies);
        report.push_str(&format!(
            " {pass}={:.0} events/s (p50={} p99={})",
            bodies.len() as f64 / elapsed,
            p.at(0.50),
            p.at(0.99)
        ));
    }
    println!("{report}");
    Ok(())
}

async fn lag(base: &str, sales: usize, pause_ms: u64, jitter_ms: u64, label: &str) -> Result<(), Error> {
    let api = loopback(base)?;
    let mut rng = Rng::new(7);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let location = format!("lag-{}", &run[20..]);
    let sku = format!("LAG-{}", &run[20..]);
    api.location(&location, 1).await;
    api.receive(&sku, &location, 1_000_000_000).await;
    let mut feed = api.subscribe("?types=dev.stockroom.reservation.committed").await;

    let (mut to_feed, mut to_figures) = (Vec::with_capacity(sales), Vec::with_capacity(sales));
    // Sales whose figures were not in the first read after the feed told of them.
    let mut stale_reads = 0;
    for n in 0..sales {
        let id = format!("lag-{run}-{n}");
        let body = json!({ "reservation_id": id, "lines": [{ "sku": sku, "quantity": 1, "location": location }] });
        let r = api.json("POST", "/v1/reservations", &body).await;
        if r.status != 201 {
            return Err(format!("hold {id}: {r:?}").into());
        }
        let r = api.json("POST", &format!("/v1/reservations/{id}/commit"), &json!({})).await;
        if r.status != 200 {
            return Err(format!("commit {id}: {r:?}").into());
        }
        let t0 = Instant::now();
        let cause = format!("reservation:{id}");
        loop {
            let Some(e) = feed.next(WAIT_MAX.saturating_sub(t0.elapsed())).await else {
                return Err(format!("{id}: no reservation.committed on the feed within {WAIT_MAX:?}").into());
            };
            if e.data["data"]["movement"]["cause"] == cause.as_str() {
                break;
            }
        }
        to_feed.push(t0.elapsed());
        let mut reads = 0;
        loop {
            reads += 1;
            let health = api.get("/v1/analytics/stock-health").await;
            let sold = health
                .body
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["sku"] == sku.as_str()))
                .and_then(|r| r["units_sold_24h"].as_i64())
                .unwrap_or(0);
            if sold > n as i64 {
                break;
            }
            if t0.elapsed() > WAIT_MAX {
                return Err(format!("{id}: not in the figures {WAIT_MAX:?} after the sale").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        to_figures.push(t0.elapsed());
        if reads > 1 {
            stale_reads += 1;
        }
        tokio::time::sleep(Duration::from_millis(pause_ms + rng.below(jitter_ms + 1))).await;
    }
    let (feed_p, figures_p) = (Percentiles::of(to_feed), Percentiles::of(to_figures));
    println!(
        "{label:<18} lag      sales={sales} pause={pause_ms}+0..{jitter_ms}ms sale→feed p50={} p95={} p99={} max={} \
         sale→dashboard p50={} p95={} p99={} max={} stale-reads={stale_reads}",
        feed_p.at(0.50),
        feed_p.at(0.95),
        feed_p.at(0.99),
        feed_p.max(),
        figures_p.at(0.50),
        figures_p.at(0.95),
        figures_p.at(0.99),
        figures_p.max(),
    );
    Ok(())
}

/// Sorted durations, printed in milliseconds.
struct Percentiles(Vec<Duration>);

impl Percentiles {
    fn of(mut d: Vec<Duration>) -> Self {
        d.sort();
        Self(d)
    }

    fn ms(d: Option<&Duration>) -> String {
        d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
    }

    fn at(&self, p: f64) -> String {
        let i = ((self.0.len() as f64 * p) as usize).min(self.0.len().saturating_sub(1));
        Self::ms(self.0.get(i))
    }

    fn max(&self) -> String {
        Self::ms(self.0.last())
    }
}
