//! What every function's router gets: the store, where commands go, where events go, and the token check.
//! Built once in `main` and cloned into each router (clients are not made per request).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::FromRef;
use serde_json::Value;
use stockroom_store::{
    AnalyticsReader, AnalyticsRecorder, AnalyticsSink, Clock, CommandInbox, CountsFiles, ExternalIds, Ledger, Outbox,
    OutboxEvent, Ping, QueuedCommand, Store, StoreError,
};
use tokio::sync::broadcast;

use crate::oidc::OidcVerifier;

/// Where commands go: the durable local queue (in `stockroom serve`), or Pub/Sub's `inventory-commands`.
#[async_trait]
pub trait CommandBus: Send + Sync + 'static {
    /// Accepted means durable: once this returns `Ok`, the commands will be applied.
    async fn publish(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError>;
}

/// The local command bus: the store's command inbox, drained by [`crate::worker`].
pub struct QueueBus(pub Arc<dyn CommandInbox>);

#[async_trait]
impl CommandBus for QueueBus {
    async fn publish(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError> {
        self.0.enqueue(commands).await
    }
}

/// Why events could not all be published; `published` holds the ids that were.
#[derive(Debug)]
pub struct SinkError {
    pub published: Vec<String>,
    pub reason: String,
}

/// Where outgoing events go: the in-process bus, or Pub/Sub's `inventory-events` (ordering key = sku).
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes in the order given. When one event of an ordering key fails, the later events of that key
    /// must not be published in this call (they would overtake it).
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), SinkError>;
}

/// Events seen on the in-process bus, at most this many kept for a slow listener before it skips ahead.
pub const LIVE_BUFFER_EVENTS: usize = 4_096;

/// The in-process event bus: every published event goes to every live listener (`/v1/events/stream`).
#[derive(Clone)]
pub struct Broadcast {
    tx: broadcast::Sender<Arc<Value>>,
}

impl Default for Broadcast {
    fn default() -> Self {
        Self { tx: broadcast::channel(LIVE_BUFFER_EVENTS).0 }
    }
}

impl Broadcast {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }

    /// Hands an event to whoever listens now; nobody listening is fine.
    pub fn send(&self, event: Value) {
        let _ = self.tx.send(Arc::new(event));
    }
}

#[async_trait]
impl EventSink for Broadcast {
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), SinkError> {
        for e in events {
            self.send(e.event.clone());
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Services {
    /// Every port of the store; handlers take the one they need (`State<Arc<dyn Ledger>>`, …).
    pub store: Arc<dyn Store>,
    /// Where "now" comes from, for handlers as for the store (tests move it).
    pub clock: Arc<dyn Clock>,
    pub commands: Arc<dyn CommandBus>,
    pub events: Arc<dyn EventSink>,
    /// Where `/v1/analytics/*` reads: the store's own tables, or BigQuery in the cloud.
    pub analytics: Arc<dyn AnalyticsReader>,
    /// Where the aggregator copies what it records, beside the store's tables: BigQuery in the cloud.
    pub analytics_copy: Option<Arc<dyn AnalyticsSink>>,
    /// The live feed behind `/v1/events/stream`.
    pub live: Broadcast,
    /// When set, `/events`, `/pubsub/push` and `/jobs/*` need a Google-signed token.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// When set, `/v1` writes and `/v1/events/stream` need a Google-signed token ([`crate::access`]).
    pub api_oidc: Option<Arc<OidcVerifier>>,
    /// One relay at a time in this process.
    pub relay_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Services {
    /// Everything in-process over one store: commands through its queue, events to the live feed.
    pub fn local(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let live = Broadcast::default();
        Self {
            clock,
            commands: Arc::new(QueueBus(store.clone())),
            events: Arc::new(live.clone()),
            analytics: store.clone(),
            analytics_copy: None,
            live,
            store,
            oidc: None,
            api_oidc: None,
            relay_lock: Arc::default(),
        }
    }
}

impl Services {
    pub fn ledger(&self) -> Arc<dyn Ledger> {
        self.store.clone()
    }

    pub fn inbox(&self) -> Arc<dyn CommandInbox> {
        self.store.clone()
    }

    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.store.clone()
    }

    pub fn external_ids(&self) -> Arc<dyn ExternalIds> {
        self.store.clone()
    }

    pub fn counts_files(&self) -> Arc<dyn CountsFiles> {
        self.store.clone()
    }

    pub fn recorder(&self) -> Arc<dyn AnalyticsRecorder> {
        self.store.clone()
    }

    pub fn ping(&self) -> Arc<dyn Ping> {
        self.store.clone()
    }
}

/// Handlers take the port they need as their state.
macro_rules! port_from_services {
    ($($port:ident => $get:ident),+ $(,)?) => {
        $(
            impl FromRef<Services> for Arc<dyn $port> {
                fn from_ref(s: &Services) -> Self {
                    s.$get()
                }
            }
        )+
    };
}

port_from_services!(Ledger => ledger, ExternalIds => external_ids, CountsFiles => counts_files);

impl FromRef<Services> for Arc<dyn Clock> {
    fn from_ref(s: &Services) -> Self {
        s.clock.clone()
    }
}

impl FromRef<Services> for Option<Arc<OidcVerifier>> {
    fn from_ref(s: &Services) -> Self {
        s.oidc.clone()
    }
}
