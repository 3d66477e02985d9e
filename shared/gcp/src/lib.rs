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
