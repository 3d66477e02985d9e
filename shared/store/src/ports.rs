//! The store's ports: small traits a backend-neutral implementation provides one by one, each held by the
//! functions that need it (`Arc<dyn Ledger>`, `Arc<dyn Outbox>`, …). [`Store`] is all of them, for the process
//! that wires them up.

use async_trait::async_trait;
use stockroom_domain::{Location, ReservationId, Sku};

use crate::analytics::{AnalyticsReader, ObservedEvent, Recorded};
use crate::error::StoreError;
use crate::model::{
    Command, CountsFile, Delivery, Idempotency, LocationRecord, MovementFilter, MovementPage, OutboxEvent, Policy,
    PolicyUpdate, QueuedCommand, ReservationView, Settled, StockView,
};
use crate::outcome::Outcome;

/// Locations, policies, stock, reservations and the movements that change them.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Creates or updates a location; `true` when it was created.
    async fn put_location(
        &self,
        id: Location,
        name: String,
        priority: i64,
    ) -> Result<(LocationRecord, bool), StoreError>;
    async fn locations(&self) -> Result<Vec<LocationRecord>, StoreError>;
    async fn put_policy(&self, sku: Sku, update: PolicyUpdate) -> Result<Policy, StoreError>;
    /// Stock of each known sku in `skus`, in the order asked; unknown skus are left out. Holds past their expiry
    /// no longer count.
    async fn stock(&self, skus: &[Sku]) -> Result<Vec<StockView>, StoreError>;
    async fn reservation(&self, id: &ReservationId) -> Result<Option<ReservationView>, StoreError>;
    async fn movements(&self, filter: &MovementFilter) -> Result<MovementPage, StoreError>;
    /// Runs a command exactly once per idempotency key. With a `delivery` (the command came as an event) a
    /// refusal also leaves as a `reservation.refused` event, and a command that came before its predecessor
    /// fails with [`StoreError::NotYet`].
    async fn execute(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        delivery: Option<Delivery>,
    ) -> Result<Outcome, StoreError>;
    /// Books up to `limit` lapsed holds as expired, the summary stored under the idempotency key if any.
    async fn expire_due(&self, limit: i64, idempotency: Option<Idempotency>) -> Result<Outcome, StoreError>;
}

/// The local command bus, made durable: what the webhooks function queues and a worker applies.
#[async_trait]
pub trait CommandInbox: Send + Sync + 'static {
    /// Queues commands. A command whose id is queued already is left alone.
    async fn enqueue(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError>;
    /// Up to `limit` queued commands due now, oldest first.
    async fn due_commands(&self, limit: i64) -> Result<Vec<QueuedCommand>, StoreError>;
    async fn settle(&self, id: &str, settled: Settled) -> Result<(), StoreError>;
}

/// The transactional outbox's publishing side.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` events not yet published, in outbox order (per ordering key, the order they happened).
    async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError>;
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError>;
}

/// Other systems' ids for our skus and locations (Shopify's), managed over the API.
#[async_trait]
pub trait ExternalIds: Send + Sync + 'static {
    async fn put_shopify_item(&self, inventory_item_id: String, sku: Sku) -> Result<(), StoreError>;
    async fn put_shopify_location(&self, location_id: String, location: Location) -> Result<(), StoreError>;
    async fn shopify_mapping(
        &self,
        inventory_item_id: &str,
        location_id: &str,
    ) -> Result<(Option<Sku>, Option<Location>), StoreError>;
}

/// Counts files announced by Cloud Storage, kept for the reconciler.
#[async_trait]
pub trait CountsFiles: Send + Sync + 'static {
    /// `false` when the file was recorded already.
    async fn record_counts_file(&self, file: CountsFile) -> Result<bool, StoreError>;
}

/// The aggregator's write: `inventory-events` recorded once per event id, threshold crossings told through the
/// outbox.
#[async_trait]
pub trait AnalyticsRecorder: Send + Sync + 'static {
    async fn record_events(&self, events: Vec<ObservedEvent>) -> Result<Recorded, StoreError>;
}

/// Whether the store is reachable and answering (`/readyz`).
#[async_trait]
pub trait Ping: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Every port at once: what a process wires its functions from.
pub trait Store:
    Ledger + CommandInbox + Outbox + ExternalIds + CountsFiles + AnalyticsRecorder + AnalyticsReader + Ping
{
}

impl<T> Store for T where
    T: Ledger + CommandInbox + Outbox + ExternalIds + CountsFiles + AnalyticsRecorder + AnalyticsReader + Ping
{
}
