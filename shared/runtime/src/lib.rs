//! The Cloud Run adapter every Stockroom function shares: serving a listener with graceful shutdown, health and
//! metrics routes, Cloud Logging JSON with trace context, bounded JSON extraction, and the one place where
//! errors become HTTP answers.

pub mod access;
pub mod connections;
pub mod events;
pub mod extract;
pub mod fields;
pub mod health;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod relay;
pub mod serve;
pub mod services;
pub mod settings;
pub mod stream;
pub mod worker;

pub use extract::{JsonBody, Path, RawBody, idempotency, idempotency_key, ok, parse};
pub use http::{ApiError, Fault, delivered, error_body, render, respond};
pub use serve::{Limits, run, shutdown_signal, trace_ids, with_edges};
pub use services::{Broadcast, CommandBus, EventSink, Services};
pub use settings::{Background, Fatal, Settings, serve_function};
