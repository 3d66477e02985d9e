//! Hot-SKU load: `clients` concurrent shoppers place 1-unit holds on one SKU for `seconds`, against a running
//! suite. Prints holds/s and latency percentiles. Used by `scripts/bench-holds`; loopback targets only.

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use stockroom_e2e::Api;

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
    #[arg(long)]
    sku: Option<String>,
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
    let sku = args.sku.unwrap_or_else(|| format!("HOT-{}", uuid::Uuid::now_v7().simple()));
    // Enough units that no hold is refused: this measures the write path, not refusals.
    api.receive(&sku, "bench", 1_000_000_000).await;
    let reserved_before = api.stock(&sku).await["total"]["reserved"].as_i64().unwrap_or(-1);

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (api, sku) = (api.clone(), sku.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
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
    let reserved = api.stock(&sku).await["total"]["reserved"].as_i64().unwrap_or(-1) - reserved_before;
    println!(
        "{:<10} clients={} live_before={} holds={} holds/s={:.0} p50={:.2}ms p99={:.2}ms errors={} reserved_check={}",
        args.label,
        args.clients,
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
