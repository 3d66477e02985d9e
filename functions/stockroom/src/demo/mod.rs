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
use std::time::Duration;

use stockroom_runtime::Settings;
use stockroom_webhooks::WebhookSettings;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use shop::{Shop, Stats};

mod catalogue;
mod planner;
mod shop;

pub use planner::{Action, Fate, FlashOrder, FlashSale, Line, Order, Planner, Restock};

/// Where the demo writes when neither `--database-url` nor `STOCKROOM_DATABASE_URL` names a store: its own file,
/// so invented orders never mix with a real `stockroom.db`. (`cli` applies it only when clap reports the URL as
/// its default value, so an explicit flag or variable always wins.)
pub const DATABASE_URL_DEFAULT: &str = "sqlite://stockroom-demo.db";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_interface_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(loopback(any).to_string(), "127.0.0.1:8080");
    }
}
