//! Google Cloud adapters, each behind a cargo feature so that the default build compiles none of them.
//!
//! - `pubsub`: [`PubSubPublisher`], the `EventSink` (outbox events to `inventory-events`) and `CommandBus`
//!   (commands to `inventory-commands`) over Pub/Sub's REST API. Tested against an emulator:
//!   `scripts/pubsub-emulator`, then `PUBSUB_EMULATOR_HOST=… cargo test -p stockroom-gcp --features pubsub`.

#[cfg(feature = "pubsub")]
mod pubsub;

#[cfg(feature = "pubsub")]
pub use pubsub::{
    Auth, COMMANDS_TOPIC, EVENTS_TOPIC, GOOGLE_ENDPOINT, METADATA_TOKEN_URL, PubSubConfig, PubSubPublisher,
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
