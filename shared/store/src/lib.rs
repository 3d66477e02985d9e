//! Stockroom's store port and its implementation over SQL.
//!
//! The ports ([`Ledger`], [`Outbox`], [`CommandInbox`], …) are small traits, each held by the functions that
//! need it; [`Store`] is all of them. [`SqlStore`] implements them once, over
//! three backends chosen by the URL: the embedded SQLite file (the default), PostgreSQL, and Spanner's
//! PostgreSQL dialect. The rules ([`sql`]) are one set of statements; where the databases differ
//! ([`sql::Dialect`]) the difference is named in one place, and how each runs its writes is its backend's
//! (`backend`): SQLite batches them through one writer, PostgreSQL and Spanner run each in its own transaction
//! and run it again when it lost a conflict.

pub mod analytics;
mod backend;
pub mod clock;
mod error;
mod event;
mod model;
mod outcome;
mod ports;
pub mod sql;
mod store;

pub use analytics::{AnalyticsReader, AnalyticsSink, ObservedEvent, ObservedMovement, Recorded};
pub use backend::spanner::{SPANNER_ENDPOINT, SpannerSettings};
pub use clock::{Clock, Ids, ManualClock, OffsetClock, SystemClock, UuidV7};
pub use error::{BoxError, StoreError};
pub use event::event_type;
pub use model::{
    AllocationView, Command, CountsFile, Delivery, Idempotency, LocationRecord, MovementFilter, MovementPage,
    MovementRow, OutboxEvent, Policy, PolicyUpdate, QueuedCommand, ReservationLineView, ReservationView, Settled,
    StockFigures, StockLocation, StockView,
};
pub use outcome::{Answer, Effect, LevelRow, Outcome, Render};
pub use ports::{AnalyticsRecorder, CommandInbox, CountsFiles, ExternalIds, Ledger, Outbox, Ping, Store};
pub use sql::Row;
pub use sql::queues::COMMAND_ATTEMPTS_MAX;
pub use sql::schema::MIGRATIONS;
pub use store::{Inspect, SqlStore, StoreKind, StoreSettings};
