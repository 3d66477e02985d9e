//! The Cloud Run adapter every Stockroom function shares: serving a listener with graceful shutdown, health and
//! metrics routes, Cloud Logging JSON with trace context, bounded JSON extraction, and the one place where
//! errors become HTTP answers.

pub mod error;
pub mod events;
pub mod extract;
pub mod fields;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod relay;
pub mod serve;
pub mod services;
pub mod settings;
pub mod stream;
pub mod worker;

pub use error::ApiError;
pub use extract::{JsonBody, RawBody, idempotency, idempotency_key, ok, parse, respond};
pub use serve::{Limits, run, shutdown_signal, trace_ids, with_edges};
pub use services::{Broadcast, CommandBus, EventSink, Services};
pub use settings::{Settings, serve_function};
