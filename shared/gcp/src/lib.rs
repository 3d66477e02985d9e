//! Google Cloud adapters, each behind a cargo feature so that the default build compiles none of them.
//!
//! - `pubsub`: [`PubSubPublisher`], the `EventSink` (outbox events to `inventory-events`) and `CommandBus`
//!   (commands to `inventory-commands`) over Pub/Sub's REST API. Tested against an emulator:
//!   `scripts/pubsub-emulator`, then `PUBSUB_EMULATOR_HOST=… cargo test -p stockroom-gcp --features pubsub`.
//! - `bigquery`: [`BigQuery`], the cloud's `AnalyticsSink` (events streamed into `inventory_events` with
//!   insertAll) and `AnalyticsReader` (the views of `analytics/bigquery/`, created by `BigQuery::apply_schema`),
//!   over BigQuery's REST API. Tested against an emulator: `scripts/bigquery-emulator`, then
//!   `BIGQUERY_EMULATOR_HOST=… cargo test -p stockroom-gcp --features bigquery`.

#[cfg(any(feature = "pubsub", feature = "bigquery"))]
pub use stockroom_google::{Auth, METADATA_TOKEN_URL};

#[cfg(feature = "pubsub")]
mod pubsub;

#[cfg(feature = "pubsub")]
pub use pubsub::{COMMANDS_TOPIC, EVENTS_TOPIC, GOOGLE_ENDPOINT, PubSubConfig, PubSubPublisher};

#[cfg(feature = "bigquery")]
mod bigquery;

#[cfg(feature = "bigquery")]
pub use bigquery::{
    ANALYTICS_DATASET, BIGQUERY_ENDPOINT, BigQuery, BigQueryConfig, INSERT_ROWS_MAX, QueryParam, QueryRow,
    REQUEST_BYTES_MAX,
};

use stockroom_runtime::{Services, Settings};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// In the cloud, events and commands go to Pub/Sub instead of the in-process bus and queue: when
/// `STOCKROOM_PUBSUB_PROJECT` is set, in a binary built with the `pubsub` feature.
#[cfg(feature = "pubsub")]
pub fn with_pubsub(mut services: Services, settings: &Settings) -> Result<Services, BoxError> {
    if let Some(project) = settings.pubsub_project.as_deref().filter(|p| !p.is_empty()) {
        let config = PubSubConfig::from_env(project, settings.pubsub_events_topic.clone());
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        let publisher = std::sync::Arc::new(
            PubSubPublisher::new(config, http).with_commands_topic(settings.pubsub_commands_topic.clone()),
        );
        services.events = publisher.clone();
        services.commands = publisher;
        tracing::info!(project, "events and commands go to Pub/Sub");
    }
    Ok(services)
}

/// Without the `pubsub` feature, asking for Pub/Sub is a configuration error rather than a silent local bus.
#[cfg(not(feature = "pubsub"))]
pub fn with_pubsub(services: Services, settings: &Settings) -> Result<Services, BoxError> {
    match settings.pubsub_project.as_deref() {
        Some(p) if !p.is_empty() => {
            Err("STOCKROOM_PUBSUB_PROJECT is set but this binary was built without the pubsub feature".into())
        }
        _ => Ok(services),
    }
}

/// In the cloud, the aggregator copies every event to BigQuery and `/v1/analytics/*` reads BigQuery's views:
/// when `STOCKROOM_BIGQUERY_PROJECT` is set, in a binary built with the `bigquery` feature. The dataset, tables
/// and views (`analytics/bigquery/`) are terraform's to create; `BigQuery::apply_schema` does the same for an
/// emulator or a scratch project.
#[cfg(feature = "bigquery")]
pub fn with_bigquery(mut services: Services, settings: &Settings) -> Result<Services, BoxError> {
    if let Some(project) = settings.bigquery_project.as_deref().filter(|p| !p.is_empty()) {
        let config = BigQueryConfig::from_env(project, settings.bigquery_dataset.clone());
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        let bigquery = std::sync::Arc::new(BigQuery::new(config, http));
        services.analytics = bigquery.clone();
        services.analytics_copy = Some(bigquery);
        tracing::info!(project, dataset = %settings.bigquery_dataset, "analytics go to BigQuery");
    }
    Ok(services)
}

/// Without the `bigquery` feature, asking for BigQuery is a configuration error rather than silently local
/// analytics.
#[cfg(not(feature = "bigquery"))]
pub fn with_bigquery(services: Services, settings: &Settings) -> Result<Services, BoxError> {
    match settings.bigquery_project.as_deref() {
        Some(p) if !p.is_empty() => {
            Err("STOCKROOM_BIGQUERY_PROJECT is set but this binary was built without the bigquery feature".into())
        }
        _ => Ok(services),
    }
}
