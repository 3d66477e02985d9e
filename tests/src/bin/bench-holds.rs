//! Hot-SKU load: `clients` concurrent shoppers place 1-unit holds on one SKU for `seconds`, against a running
//! suite; or, with `--skus N`, spread over N SKUs, each hold on one picked at random. Prints holds/s and latency
//! percentiles, and checks that the SKUs' reserved grew by exactly the holds answered 201. Used by
//! `scripts/bench-holds` and `scripts/bench`; loopback targets only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use stockroom_e2e::{Api, Rng};

#[derive(Parser)]
struct Args {
    /// The suite, e.g. http://127.0.0.1:8080 (must be a loopback address).
    #[arg(long)]
    base: String,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The SKU to load (default: a new one). `scripts/bench-holds` names one it seeded with live holds.
    #[arg(long, conflicts_with = "skus")]
    sku: Option<String>,
    /// Spread the holds over this many new SKUs instead of one.
    #[arg(long, default_value_t = 1)]
    skus: usize,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let addr: std::net::SocketAddr = args.base.trim_start_matches("http://").parse()?;
    if !addr.ip().is_loopback() {
        return Err("bench-holds only targets loopback addresses".into());
    }
    let api = Api::new(addr);
    api.location("bench", 1).await;
    let skus: Arc<Vec<String>> = Arc::new(match args.sku {
        Some(sku) => vec![sku],
        None => {
            let run = uuid::Uuid::now_v7().simple().to_string();
            (0..args.skus.max(1)).map(|i| format!("HOT-{run}-{i}")).collect()
        }
    });
    // Enough units that no hold is refused: this measures the write path, not refusals.
    let reserved_before = reserved(&api, &skus, args.clients, true).await;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|client| {
            let (api, skus) = (api.clone(), skus.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut pick = Rng::new(client as u64 + 1);
                while Instant::now() < deadline {
                    let sku = &skus[pick.below(skus.len() as u64) as usize];
                    let t = Instant::now();
                    let body = json!({ "lines": [{ "sku": sku, "quantity": 1 }], "ttl_seconds": 3600 });
                    match api.try_json("POST", "/v1/reservations", &body).await {
                        Ok(r) if r.status == 201 => latencies.push(t.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
    let reserved = reserved(&api, &skus, args.clients, false).await - reserved_before;
    println!(
        "{:<10} clients={} skus={} live_before={} holds={} holds/s={:.0} p50={:.2}ms p99={:.2}ms errors={} reserved_check={}",
        args.label,
        args.clients,
        skus.len(),
        reserved_before,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        ms(pct(0.50)),
        ms(pct(0.99)),
        errors,
        if reserved == latencies.len() as i64 { "ok" } else { "MISMATCH" },
    );
    Ok(())
}

/// The units reserved on `skus` in all, read `clients` at a time; `stock` first receives plenty on each.
async fn reserved(api: &Api, skus: &Arc<Vec<String>>, clients: usize, stock: bool) -> i64 {
    let next = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..clients.clamp(1, skus.len()))
        .map(|_| {
            let (api, skus, next) = (api.clone(), skus.clone(), next.clone());
            tokio::spawn(async move {
                let mut sum = 0;
                while let Some(sku) = skus.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if stock {
                        api.receive(sku, "bench", 1_000_000_000).await;
                    }
                    sum += api.stock(sku).await["total"]["reserved"].as_i64().unwrap_or(i64::MIN / 2);
                }
                sum
            })
        })
        .collect();
    let mut sum = 0;
    for r in readers {
        sum += r.await.unwrap_or(i64::MIN / 2);
    }
    sum
}
