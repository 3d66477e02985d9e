//! Webhook-to-event latency and event throughput: `orders` signed Shopify `orders/create` webhooks, `clients`
//! at a time, against a running suite (loopback only), timed from the request to the moment the order's
//! `reservation.committed` event arrives on `/v1/events/stream`. Used by `scripts/bench-events`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use stockroom_e2e::Api;
use tokio::sync::Mutex;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: String,
    #[arg(long, default_value_t = 2_000)]
    orders: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Must be one of the suite's STOCKROOM_SHOPIFY_SECRETS.
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    #[arg(long, default_value = "")]
    label: String,
    /// Pause of each client between webhooks: 0 floods (throughput), a few ms paces (latency without a queue).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let addr: std::net::SocketAddr = args.base.trim_start_matches("http://").parse()?;
    if !addr.ip().is_loopback() {
        return Err("bench-events only targets loopback addresses".into());
    }
    let api = Api::new(addr);
    api.location("bench", 1).await;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let sku = format!("EV-{}", &run[..12]);
    api.receive(&sku, "bench", 1_000_000_000).await;

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = api.subscribe("?types=dev.stockroom.reservation.committed").await;
    let base_id: u64 = 7_000_000_000_000_000_000 + (Instant::now().elapsed().as_nanos() as u64 % 1_000_000);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..args.clients)
        .map(|_| {
            let (api, sent, next, sku, secret, run) =
                (api.clone(), sent.clone(), next.clone(), sku.clone(), args.secret.clone(), run.clone());
            let orders = args.orders;
            let pause = Duration::from_millis(args.pause_ms);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= orders {
                        return;
                    }
                    let id = base_id + n as u64;
                    let body = json!({ "id": id, "line_items": [{ "id": 1, "sku": sku, "quantity": 1 }] });
                    sent.lock().await.insert(format!("reservation:shopify-order-{id}"), Instant::now());
                    let r = api.shopify("orders/create", &format!("bench-{run}-{n}"), &body, Some(&secret)).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();

    let mut latencies = Vec::with_capacity(args.orders);
    while latencies.len() < args.orders {
        let Some(e) = stream.next(Duration::from_secs(30)).await else { break };
        let cause = e.data["data"]["movement"]["cause"].as_str().unwrap_or_default().to_owned();
        if let Some(at) = sent.lock().await.remove(&cause) {
            latencies.push(at.elapsed());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for s in senders {
        s.await?;
    }
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
    println!(
        "{:<10} orders={} clients={} pause={}ms delivered={} p50={:.1}ms p99={:.1}ms committed-events/s={:.0}",
        args.label,
        args.orders,
        args.clients,
        args.pause_ms,
        latencies.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        latencies.len() as f64 / elapsed
    );
    Ok(())
}
