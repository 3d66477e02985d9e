//! `GET /v1/events/stream`: the outgoing events as server-sent events, for dashboards and tests.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::services::Services;

pub fn router(services: Services) -> Router {
    Router::new().route("/v1/events/stream", get(stream)).with_state(services)
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Only events whose type starts with this (e.g. `dev.stockroom.reservation.`).
    pub types: Option<String>,
}

async fn stream(
    State(services): State<Services>,
    Query(q): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = services.live.subscribe();
    let prefix = q.types.unwrap_or_default();
    let events = futures::stream::unfold((rx, prefix), |(mut rx, prefix)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => {
                    let ty = e["type"].as_str().unwrap_or_default();
                    if !ty.starts_with(&prefix) {
                        continue;
                    }
                    Event::default().id(e["id"].as_str().unwrap_or_default()).event(ty).data(e.to_string())
                }
                // A listener too slow to keep up skips ahead, and is told by how many events.
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, prefix)));
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
