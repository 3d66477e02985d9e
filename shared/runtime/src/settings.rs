//! Settings, typed and read once in `main` from flags or the environment. Every one is in the README.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use stockroom_store::{Clock, SqlStore, Store, StoreSettings, SystemClock};

use crate::oidc::{OidcConfig, OidcVerifier};
use crate::services::Services;

use crate::serve::{Limits, run, shutdown_signal, with_edges};

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Port to listen on (Cloud Run sets it).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "STOCKROOM_BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// The ledger: `sqlite://PATH`, `postgres://USER@HOST:PORT/DB` or
    /// `spanner://projects/P/instances/I/databases/D` (a PostgreSQL-dialect database).
    /// A secret: it may carry a password, so `Debug` never shows it.
    #[arg(long, env = "STOCKROOM_DATABASE_URL", default_value = "sqlite://stockroom.db", value_parser = secret, hide_env_values = true)]
    pub database_url: SecretString,
    /// PostgreSQL connections (SQLite: reader connections).
    #[arg(long, env = "STOCKROOM_DB_POOL_MAX", default_value_t = 16)]
    pub db_pool_max: u32,
    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "STOCKROOM_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,
    /// SQLite: most commands applied in one transaction by the writer.
    #[arg(long, env = "STOCKROOM_SQLITE_BATCH_MAX", default_value_t = 128)]
    pub sqlite_batch_max: usize,
    /// SQLite: most commands waiting for the writer before answering 503.
    #[arg(long, env = "STOCKROOM_SQLITE_QUEUE_MAX", default_value_t = 4_096)]
    pub sqlite_queue_max: usize,
    /// How long an idempotency key answers 409 idempotency_in_progress after an attempt that died unanswered.
    #[arg(long, env = "STOCKROOM_IDEMPOTENCY_LEASE_SECONDS", default_value_t = 10)]
    pub idempotency_lease_seconds: i64,
    /// Largest request body accepted.
    #[arg(long, env = "STOCKROOM_BODY_BYTES_MAX", default_value_t = 256 * 1024)]
    pub body_bytes_max: usize,
    /// A request running longer than this is answered 503.
    #[arg(long, env = "STOCKROOM_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// After SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "STOCKROOM_DRAIN_SECONDS", default_value_t = 8)]
    pub drain_seconds: u64,
    /// A connection's first byte, and each HTTP/1.1 request's headers, must arrive within this; it is also how
    /// long an idle HTTP/1.1 keep-alive connection is kept.
    #[arg(long, env = "STOCKROOM_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long is closed (HTTP/2, and a client that stops
    /// reading). Keep it above the request timeout.
    #[arg(long, env = "STOCKROOM_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Most client connections open at once; past it new connects wait in the listen backlog.
    #[arg(long, env = "STOCKROOM_CONNECTIONS_MAX", default_value_t = 10_000)]
    pub connections_max: usize,
    /// At start-up, how long a store that cannot be reached yet (it may be starting beside us) is waited for,
    /// retrying with growing pauses, before the process exits saying so.
    #[arg(long, env = "STOCKROOM_STORE_WAIT_MS", default_value_t = 30_000)]
    pub store_wait_ms: u64,
    /// Google Cloud project, for trace ids in logs.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub project: Option<String>,
    /// When set, `/events`, `/pubsub/push` and `/jobs/*` need a Google-signed OIDC token for this audience.
    #[arg(long, env = "STOCKROOM_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Service-account emails allowed to call those routes (comma-separated); empty allows any verified email.
    #[arg(long, env = "STOCKROOM_OIDC_EMAILS", default_value = "")]
    pub oidc_emails: String,
    /// When set, every `/v1` write and `/v1/events/stream` need a Google-signed OIDC token for this audience
    /// (the front door of the long-running piece, which has no Cloud Run IAM before it). Reads stay open.
    #[arg(long, env = "STOCKROOM_API_AUDIENCE")]
    pub api_audience: Option<String>,
    /// Accounts allowed to write through the API (comma-separated); empty allows any verified email.
    #[arg(long, env = "STOCKROOM_API_EMAILS", default_value = "")]
    pub api_emails: String,
    /// Where the token signing keys are published.
    #[arg(long, env = "STOCKROOM_OIDC_JWKS_URL", default_value = crate::oidc::GOOGLE_JWKS_URL)]
    pub oidc_jwks_url: String,
    /// How often the outbox is relayed in the background; 0 relays only on `POST /jobs/relay-outbox`.
    #[arg(long, env = "STOCKROOM_RELAY_INTERVAL_MS", default_value_t = 200)]
    pub relay_interval_ms: u64,
    /// How often the local command queue is drained; 0 leaves it to another process.
    #[arg(long, env = "STOCKROOM_COMMANDS_INTERVAL_MS", default_value_t = 100)]
    pub commands_interval_ms: u64,
    /// How often lapsed holds are booked as expired in the background, so that their `reservation.expired`
    /// events reach analytics (availability never waits for it: expiry is read-time); 0 leaves it to
    /// `POST /jobs/expire-reservations`.
    #[arg(long, env = "STOCKROOM_EXPIRE_INTERVAL_MS", default_value_t = 5_000)]
    pub expire_interval_ms: u64,
    /// Copy analytics to BigQuery in this project and answer `/v1/analytics/*` from it (the aggregator built
    /// with the `bigquery` feature); unset keeps analytics in the store. `BIGQUERY_EMULATOR_HOST` points it at
    /// an emulator.
    #[arg(long, env = "STOCKROOM_BIGQUERY_PROJECT")]
    pub bigquery_project: Option<String>,
    /// The BigQuery dataset holding the analytics tables and views.
    #[arg(long, env = "STOCKROOM_BIGQUERY_DATASET", default_value = "stockroom")]
    pub bigquery_dataset: String,
    /// Publish events and commands to Pub/Sub in this project (binaries built with the `pubsub` feature);
    /// unset keeps both in-process. `PUBSUB_EMULATOR_HOST` points it at an emulator.
    #[arg(long, env = "STOCKROOM_PUBSUB_PROJECT")]
    pub pubsub_project: Option<String>,
    #[arg(long, env = "STOCKROOM_PUBSUB_EVENTS_TOPIC", default_value = "inventory-events")]
    pub pubsub_events_topic: String,
    #[arg(long, env = "STOCKROOM_PUBSUB_COMMANDS_TOPIC", default_value = "inventory-commands")]
    pub pubsub_commands_topic: String,
    /// Google's variable for a Spanner emulator: `host:port` of its gRPC port. When set, `spanner://` goes to the
    /// emulator's REST gateway with no auth, and the store makes the instance and database if they are missing.
    #[arg(long, env = "SPANNER_EMULATOR_HOST")]
    pub spanner_emulator_host: Option<String>,
    /// The Spanner emulator's REST gateway, `host:port`; by default SPANNER_EMULATOR_HOST's host at its port +
    /// 10, as `gcloud emulators spanner start --host-port=127.0.0.1:9010 --rest-port=9020` lays them out.
    #[arg(long, env = "STOCKROOM_SPANNER_EMULATOR_REST")]
    pub spanner_emulator_rest: Option<String>,
    /// Spanner: times a write whose transaction was aborted (it lost a conflict) is run again before the request
    /// is answered 503.
    #[arg(long, env = "STOCKROOM_SPANNER_ABORT_RETRIES_MAX", default_value_t = 12)]
    pub spanner_abort_retries_max: u32,
    /// Where time comes from: the wall clock, unless a test hands in one it moves.
    #[arg(skip)]
    pub clock: Option<Arc<dyn Clock>>,
}

/// A setting that is a secret, as clap parses it.
pub fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

impl Settings {
    /// Defaults for a database, as a test or an embedding program would start from.
    pub fn for_database(url: impl Into<String>) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        // Parsing no arguments gives the documented defaults (and whatever STOCKROOM_* the environment sets).
        let mut s = Only::try_parse_from(["stockroom"]).map(|o| o.s).unwrap_or_else(|_| Self::fallback());
        s.database_url = SecretString::from(url.into());
        s
    }

    fn fallback() -> Self {
        Self {
            port: 8080,
            bind: "0.0.0.0".into(),
            database_url: SecretString::from("sqlite://stockroom.db"),
            db_pool_max: 16,
            db_acquire_timeout_ms: 5_000,
            sqlite_batch_max: 128,
            sqlite_queue_max: 4_096,
            idempotency_lease_seconds: 10,
            body_bytes_max: 256 * 1024,
            request_timeout_ms: 30_000,
            drain_seconds: 8,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            connections_max: 10_000,
            store_wait_ms: 30_000,
            project: None,
            oidc_audience: None,
            oidc_emails: String::new(),
            api_audience: None,
            api_emails: String::new(),
            oidc_jwks_url: crate::oidc::GOOGLE_JWKS_URL.to_owned(),
            relay_interval_ms: 200,
            commands_interval_ms: 100,
            expire_interval_ms: 5_000,
            bigquery_project: None,
            bigquery_dataset: "stockroom".into(),
            pubsub_project: None,
            pubsub_events_topic: "inventory-events".into(),
            pubsub_commands_topic: "inventory-commands".into(),
            spanner_emulator_host: None,
            spanner_emulator_rest: None,
            spanner_abort_retries_max: 12,
            clock: None,
        }
    }

    pub fn store(&self) -> StoreSettings {
        let mut s = StoreSettings::new(self.database_url.expose_secret(), crate::http::render);
        s.clock = self.clock();
        s.spanner.emulator = self.spanner_emulator_rest();
        s.spanner.abort_retries_max = self.spanner_abort_retries_max;
        s.pool_max = self.db_pool_max;
        s.acquire_timeout_ms = self.db_acquire_timeout_ms;
        s.batch_max = self.sqlite_batch_max;
        s.queue_max = self.sqlite_queue_max;
        s.claim_lease_seconds = self.idempotency_lease_seconds;
        s
    }

    pub fn limits(&self) -> Limits {
        Limits {
            body_bytes_max: self.body_bytes_max,
            request_timeout_ms: self.request_timeout_ms,
            drain_seconds: self.drain_seconds,
            connections: crate::connections::ConnectionLimits {
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                connections_max: self.connections_max,
            },
        }
    }

    /// `http://host:port` of the Spanner emulator's REST gateway, when an emulator is named.
    pub fn spanner_emulator_rest(&self) -> Option<String> {
        let explicit = self.spanner_emulator_rest.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let grpc = self.spanner_emulator_host.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let host = match (explicit, grpc) {
            (Some(rest), _) => rest.to_owned(),
            (None, Some(grpc)) => match grpc.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some((h, Ok(port))) => format!("{h}:{}", port.saturating_add(10)),
                _ => format!("{grpc}:9020"),
            },
            (None, None) => return None,
        };
        Some(if host.contains("://") { host } else { format!("http://{host}") })
    }

    /// The clock every part of the process reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock))
    }

    pub async fn connect(&self) -> Result<Arc<dyn Store>, stockroom_store::StoreError> {
        Ok(Arc::new(SqlStore::connect(&self.store()).await?))
    }

    /// [`connect`](Self::connect), waiting out a store that is not up yet (it may be starting beside us) for up
    /// to `store_wait_ms`, with growing pauses; then a plain reason to stop.
    pub async fn connect_waiting(&self) -> Result<Arc<dyn Store>, Fatal> {
        let wait = Duration::from_millis(self.store_wait_ms);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match self.connect().await {
                Ok(store) => return Ok(store),
                Err(e) if e.is_transient() && started.elapsed() < wait => {
                    let nap = pause.min(wait.saturating_sub(started.elapsed()));
                    tracing::warn!(error = %e, retry_in_ms = nap.as_millis() as u64, "the store is not reachable yet");
                    tokio::time::sleep(nap).await;
                    pause = (pause * 2).min(Duration::from_secs(4));
                }
                Err(e) if e.is_transient() => {
                    return Err(Fatal(format!(
                        "the store ({}) is still not reachable after {:.1} s (STOCKROOM_STORE_WAIT_MS): {e}",
                        self.store_kind(),
                        started.elapsed().as_secs_f64()
                    )));
                }
                Err(e) => return Err(Fatal(format!("the store ({}) cannot be used: {e}", self.store_kind()))),
            }
        }
    }

    /// Which store the URL names, without its secrets.
    fn store_kind(&self) -> &'static str {
        self.store().kind().map_or("unknown kind", stockroom_store::StoreKind::name)
    }

    /// The listening socket on `bind:port`, with a backlog sized for bursts of connects, or a plain reason why not.
    pub async fn listen(&self) -> Result<tokio::net::TcpListener, Fatal> {
        let at = format!("{}:{}", self.bind, self.port);
        let cannot = |e: std::io::Error| {
            Fatal(match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    format!(
                        "cannot listen on {at}: another process already listens there (choose a port with PORT or --port)"
                    )
                }
                _ => format!("cannot listen on {at}: {e}"),
            })
        };
        let addr = tokio::net::lookup_host(&at)
            .await
            .map_err(cannot)?
            .next()
            .ok_or_else(|| Fatal(format!("cannot listen on {at}: the address resolves to nothing")))?;
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .map_err(cannot)?;
        socket.set_reuseaddr(true).map_err(cannot)?;
        socket.bind(addr).map_err(cannot)?;
        socket.listen(LISTEN_BACKLOG).map_err(cannot)
    }

    /// The store, the in-process buses and the token check, built once for the process.
    pub async fn services(&self) -> Result<Services, Box<dyn std::error::Error + Send + Sync>> {
        let mut services = Services::local(self.connect_waiting().await?, self.clock());
        let verifier = |audience: Option<&str>, emails: &str| -> Result<_, reqwest::Error> {
            let Some(audience) = audience.filter(|a| !a.is_empty()) else { return Ok(None) };
            let mut config = OidcConfig::new(audience, OidcConfig::parse_emails(emails));
            config.jwks_url = self.oidc_jwks_url.clone();
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            Ok(Some(Arc::new(OidcVerifier::new(config, http))))
        };
        services.oidc = verifier(self.oidc_audience.as_deref(), &self.oidc_emails)?;
        services.api_oidc = verifier(self.api_audience.as_deref(), &self.api_emails)?;
        Ok(services)
    }

    /// Starts the loops `background` asks for, each at its configured interval (0 turns one off).
    pub fn start_background(&self, services: &Services, background: Background) {
        if background.relay && self.relay_interval_ms > 0 {
            crate::relay::spawn(services.clone(), Duration::from_millis(self.relay_interval_ms));
        }
        if background.expiry && self.expire_interval_ms > 0 {
            crate::relay::spawn_expiry(services.clone(), Duration::from_millis(self.expire_interval_ms));
        }
        if let Some(handler) = background.commands
            && self.commands_interval_ms > 0
        {
            crate::worker::spawn(services.clone(), handler, Duration::from_millis(self.commands_interval_ms));
        }
    }
}

/// The loops a function runs beside its routes; each function asks only for its own.
#[derive(Default)]
pub struct Background {
    /// Publishes the outbox: for functions that write to it (stock-updates, reservations, the aggregator).
    pub relay: bool,
    /// Books lapsed holds as expired (reservations).
    pub expiry: bool,
    /// Drains the local command queue with this handler (stock-updates).
    pub commands: Option<crate::worker::Handler>,
}

impl Background {
    /// Everything: the whole suite in one process.
    pub fn all(handler: crate::worker::Handler) -> Self {
        Self { relay: true, expiry: true, commands: Some(handler) }
    }
}

/// Connections the kernel queues before `accept` (Linux caps it at `net.core.somaxconn`, 4096 by default).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A reason the process cannot start, said plainly. A `main` that returns an error prints its `Debug` form, so
/// here that is the message itself.
pub struct Fatal(pub String);

impl std::fmt::Debug for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Swaps the cloud's buses into the services where configured (`stockroom_gcp::with_pubsub`).
pub type Wire = fn(Services, &Settings) -> Result<Services, Box<dyn std::error::Error + Send + Sync>>;

/// A whole function's `main`: settings, logs, one store for the process, the router with its edges and the
/// health routes, served on `PORT` until SIGTERM.
pub async fn serve_function(
    name: &str,
    settings: Settings,
    router: impl FnOnce(Services) -> Router,
    background: Background,
    wire: Wire,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    crate::memory::bound_arenas();
    crate::logging::init(settings.project.clone());
    // `wire` swaps in the cloud's buses (Pub/Sub) where configured; see stockroom_gcp::with_pubsub.
    let services = wire(settings.services().await?, &settings)?;
    settings.start_background(&services, background);
    let routes = router(services.clone()).merge(crate::health::router(services.ping()));
    let app = with_edges(crate::access::guard_api(routes, services.api_oidc.clone()), &settings.limits());
    let listener = settings.listen().await?;
    tracing::info!(function = name, address = %listener.local_addr()?, "listening");
    run(listener, app, shutdown_signal(), &settings.limits()).await?;
    tracing::info!(function = name, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_reaches_debug_output() {
        let settings = Settings::for_database("postgres://stockroom:hunter2@db.internal:5432/ledger");
        assert!(!format!("{settings:?}").contains("hunter2"), "{settings:?}");
        assert!(!format!("{:?}", settings.store()).contains("hunter2"));
        assert_eq!(settings.store().url.expose_secret(), "postgres://stockroom:hunter2@db.internal:5432/ledger");
    }
}
