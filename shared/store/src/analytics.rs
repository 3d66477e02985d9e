//! The analytics ports: what the aggregator records from `inventory-events`, and the figures the analytics
//! endpoints read back. The embedded implementation is in `sql::analytics`; BigQuery's in `stockroom-gcp`.

use async_trait::async_trait;
use serde_json::Value;
use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{Bucket, Health, SalesPoint, TopSeller, Window};

use crate::error::StoreError;

/// A CloudEvent from `inventory-events` as the aggregator got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedEvent {
    /// The CloudEvent id (for movement events, the movement id).
    pub id: String,
    pub ty: String,
    /// The whole event, structured mode.
    pub body: Value,
    /// The movement it carries, if it is a movement event.
    pub movement: Option<ObservedMovement>,
}

/// A movement event's movement and the row's levels right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMovement {
    pub id: String,
    pub at: Timestamp,
    pub sku: String,
    pub location: String,
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub committed_delta: i64,
    /// What caused it: for reservation movements `reservation:<id>`, which is what `orders` counts.
    pub cause: Option<String>,
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub safety_stock: i64,
    pub available: i64,
}

/// What one `record` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    /// Events seen for the first time.
    pub recorded: usize,
    /// Events seen before (left alone).
    pub duplicates: usize,
    /// Threshold events written to the outbox.
    pub crossings: usize,
}

/// The figures behind `/v1/analytics/*`: from the embedded tables locally, from BigQuery's views in the cloud.
#[async_trait]
pub trait AnalyticsReader: Send + Sync + 'static {
    /// One row per sku (figures summed over locations), or per sku at `location`; ordered by sku.
    async fn stock_health(&self, location: Option<&str>, now: Timestamp) -> Result<Vec<Health>, StoreError>;
    /// The sku's sales summed over locations, one point per bucket from `from`'s bucket to `to`'s, zeros
    /// included. The caller bounds the span (`stockroom_domain::analytics::series_starts`).
    async fn sales(
        &self,
        sku: &str,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SalesPoint>, StoreError>;
    /// Best sellers over the trailing window, ranked by `rank_top_sellers`.
    async fn top_sellers(&self, window: Window, limit: i64, now: Timestamp) -> Result<Vec<TopSeller>, StoreError>;
}

/// Where the aggregator copies events for the cloud's analytics (BigQuery), beside its own tables. Writes must
/// be idempotent per event id (BigQuery: `insertId`, and views that keep one row per id).
#[async_trait]
pub trait AnalyticsSink: Send + Sync + 'static {
    async fn write(&self, events: &[ObservedEvent]) -> Result<(), StoreError>;
}
