//! Stockroom's store port and its implementation over SQL.
//!
//! [`Store`] is the port every function holds (as `Arc<dyn Store>`). [`SqlStore`] implements it once, over
//! three backends chosen by the URL: the embedded SQLite file (the default), PostgreSQL, and Spanner's
//! PostgreSQL dialect. The rules ([`sql`]) are one set of statements; where the databases differ
//! ([`sql::Dialect`]) the difference is named in one place, and how each runs its writes is its backend's
//! (`backend`): SQLite batches them through one writer, PostgreSQL and Spanner run each in its own transaction
//! and run it again when it lost a conflict.

pub mod analytics;
mod answer;
mod backend;
pub mod clock;
mod error;
mod event;
mod model;
pub mod sql;
mod store;

pub use analytics::{AnalyticsReader, AnalyticsSink, ObservedEvent, ObservedMovement, Recorded};
pub use answer::{Answer, error_body};
pub use clock::{Clock, Ids, ManualClock, SystemClock, UuidV7};
pub use error::{BoxError, StoreError};
pub use event::event_type;
pub use model::{
    AllocationView, Command, CountsFile, Delivery, Idempotency, LocationRecord, MovementFilter, MovementPage,
    MovementRow, OutboxEvent, Policy, PolicyUpdate, QueuedCommand, ReservationLineView, ReservationView, Settled,
    StockFigures, StockLocation, StockView,
};
pub use sql::queues::COMMAND_ATTEMPTS_MAX;
pub use store::{SqlStore, StoreSettings};

use async_trait::async_trait;
use stockroom_domain::{Location, ReservationId, Sku, Timestamp};

/// What every Stockroom function needs from the ledger (and the analytics the aggregator keeps beside it).
#[async_trait]
pub trait Store: AnalyticsReader + Send + Sync + 'static {
    /// The aggregator's write: records `inventory-events` once per event id, and tells threshold crossings
    /// through the outbox (see [`analytics`]).
    async fn record_events(&self, events: Vec<ObservedEvent>, now: Timestamp) -> Result<Recorded, StoreError>;
    /// Creates or updates a location; `true` when it was created.
    async fn put_location(
        &self,
        id: Location,
        name: String,
        priority: i64,
    ) -> Result<(LocationRecord, bool), StoreError>;
    async fn locations(&self) -> Result<Vec<LocationRecord>, StoreError>;
    /// Stock of each known sku in `skus`, in the order asked; unknown skus are left out.
    async fn stock(&self, skus: &[Sku], now: Timestamp) -> Result<Vec<StockView>, StoreError>;
    async fn reservation(&self, id: &ReservationId, now: Timestamp) -> Result<Option<ReservationView>, StoreError>;
    async fn movements(&self, filter: &MovementFilter) -> Result<MovementPage, StoreError>;
    async fn put_policy(&self, sku: Sku, update: PolicyUpdate) -> Result<Policy, StoreError>;
    /// Runs a command exactly once per idempotency key and answers as the contract says. With a `delivery`
    /// (the command came as an event) a refusal also leaves as a `reservation.refused` event, and a command
    /// that came before its predecessor fails with [`StoreError::NotYet`].
    async fn execute(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        delivery: Option<Delivery>,
    ) -> Result<Answer, StoreError>;
    /// Books up to `limit` lapsed holds as expired: `{"expired": n}`, stored under the idempotency key if any.
    async fn expire_due(&self, limit: i64, idempotency: Option<Idempotency>) -> Result<Answer, StoreError>;
    /// Reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Queues commands durably (the local command bus). A command whose id is queued already is left alone.
    async fn enqueue(&self, commands: Vec<QueuedCommand>) -> Result<(), StoreError>;
    /// Up to `limit` queued commands due now, oldest first.
    async fn due_commands(&self, limit: i64) -> Result<Vec<QueuedCommand>, StoreError>;
    async fn settle(&self, id: &str, settled: Settled) -> Result<(), StoreError>;
    /// Up to `limit` events not yet published, in outbox order (per ordering key, the order they happened).
    async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxEvent>, StoreError>;
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Records a counts file for the reconciler; `false` when it was recorded already.
    async fn record_counts_file(&self, file: CountsFile) -> Result<bool, StoreError>;
    /// Shopify's ids to ours, managed over the API.
    async fn put_shopify_item(&self, inventory_item_id: String, sku: Sku) -> Result<(), StoreError>;
    async fn put_shopify_location(&self, location_id: String, location: Location) -> Result<(), StoreError>;
    async fn shopify_mapping(
        &self,
        inventory_item_id: &str,
        location_id: &str,
    ) -> Result<(Option<Sku>, Option<Location>), StoreError>;
}
