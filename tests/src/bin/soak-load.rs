//! The mixed load behind `scripts/soak`: `clients` shoppers over `skus` SKUs, for `seconds`. Each round holds one
//! or two units, then commits (half), releases (a quarter) or lets the hold lapse; a receipt tops a SKU up when it
//! runs low, and every round reads the stock. Prints one CSV line per `every` seconds: requests, errors (5xx or
//! no answer) and latency percentiles of that interval. Loopback targets only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use stockroom_e2e::{Api, Rng};

#[derive(Parser)]
struct Args {
    /// The suite, e.g. http://127.0.0.1:8080 (must be a loopback address).
    #[arg(long)]
    base: String,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 1000)]
    skus: usize,
    #[arg(long, default_value_t = 1800)]
    seconds: u64,
    /// Seconds per CSV line.
    #[arg(long, default_value_t = 10)]
    every: u64,
}

#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    errors: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let addr: std::net::SocketAddr = args.base.trim_start_matches("http://").parse()?;
    if !addr.ip().is_loopback() {
        return Err("soak-load only targets loopback addresses".into());
    }
    let api = Api::new(addr);
    api.location("soak", 1).await;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let skus: Arc<Vec<String>> = Arc::new((0..args.skus).map(|i| format!("SOAK-{}-{i}", &run[..8])).collect());
    for sku in skus.iter() {
        api.receive(sku, "soak", 50).await;
    }
    let window = Arc::new(Mutex::new(Window::default()));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    for c in 0..args.clients {
        let (api, skus, window) = (api.clone(), skus.clone(), window.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut rng = Rng::new(c as u64 + 1);
            while Instant::now() < deadline {
                n += 1;
                let sku = skus[rng.below(skus.len() as u64) as usize].clone();
                let (quantity, fate) = (1 + rng.below(2), rng.below(4));
                let id = format!("soak-{c}-{n}-{}", &sku[5..13]);
                let hold =
                    json!({ "reservation_id": id, "lines": [{ "sku": sku, "quantity": quantity }], "ttl_seconds": 30 });
                let mut steps = vec![("POST", "/v1/reservations".to_owned(), hold)];
                match fate {
                    0 | 1 => steps.push(("POST", format!("/v1/reservations/{id}/commit"), json!({}))),
                    2 => steps.push(("POST", format!("/v1/reservations/{id}/release"), json!({}))),
                    _ => {} // left to lapse
                }
                for (method, path, body) in steps {
                    let t = Instant::now();
                    let answer = api.try_json(method, &path, &body).await;
                    let elapsed = t.elapsed();
                    let refused_for_stock = matches!(&answer, Ok(r) if r.status == 409);
                    if let Ok(mut w) = window.lock() {
                        match &answer {
                            Ok(r) if r.status < 500 => w.latencies.push(elapsed),
                            _ => w.errors += 1,
                        }
                    }
                    if refused_for_stock {
                        // Sold out: a receipt, as a warehouse would send.
                        let key = uuid::Uuid::now_v7().to_string();
                        let body = json!({ "changes": [{ "sku": sku, "location": "soak", "delta": 50, "reason": "received" }] });
                        let _ = api.json_with_key("POST", "/v1/adjustments", &key, &body).await;
                        break;
                    }
                }
                let t = Instant::now();
                let read = api.get(&format!("/v1/stock/{sku}")).await;
                if let Ok(mut w) = window.lock() {
                    if read.status < 500 { w.latencies.push(t.elapsed()) } else { w.errors += 1 }
                }
            }
        });
    }
    println!("elapsed_s,requests,errors,p50_ms,p99_ms");
    let started = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(args.every)).await;
        let mut w = window.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        w.latencies.sort();
        let pct = |p: f64| {
            w.latencies
                .get(((w.latencies.len() as f64 * p) as usize).min(w.latencies.len().saturating_sub(1)))
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{},{},{},{:.2},{:.2}",
            started.elapsed().as_secs(),
            w.latencies.len() as u64 + w.errors,
            w.errors,
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(())
}
