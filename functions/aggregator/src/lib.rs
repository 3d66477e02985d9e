//! `aggregator`: turns `inventory-events` into live analytics.
//!
//! In the cloud it is an Eventarc / Pub/Sub push subscriber of `inventory-events` (`/events`, `/pubsub/push`);
//! in `stockroom serve` the outbox relay hands it every event before the live feed does ([`Aggregating`]), so
//! the dashboard, told by the feed, reads figures that already include the event. Either way each event id is
//! recorded once (the store's `analytics_events` key), and a sku whose health status changes leaves one
//! `stock.low`, `stock.depleted` or `stock.replenished` event through the outbox.
//!
//! `/v1/analytics/*` answers from [`Services::analytics`]: the store's tables, or BigQuery's views.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use stockroom_domain::Sku;
use stockroom_domain::analytics::{
    Bucket, Health, HealthStatus, SalesPoint, TOP_SELLERS_DEFAULT, TOP_SELLERS_MAX, TopSeller, Window, series_starts,
};
use stockroom_events::CloudEvent;
use stockroom_events::event::{self as ev, MovementData};
use stockroom_runtime::Path;
use stockroom_runtime::events::{self, Envelope, IncomingEvent, envelope_of_message};
use stockroom_runtime::openapi::{BadRequest, ErrorBody, Rfc3339, Unavailable};
use stockroom_runtime::services::SinkError;
use stockroom_runtime::{ApiError, EventSink, RawBody, Services, fields, ok, relay};
use stockroom_store::{ObservedEvent, ObservedMovement, OutboxEvent, Recorded, StoreError};
use utoipa::OpenApi;

/// Events one `/events` or relay call records at most in one transaction.
pub const RECORD_BATCH_MAX: usize = 500;

/// The event types that carry a movement (`data.movement` and `data.levels`).
const MOVEMENT_TYPES: &[&str] = &[
    ev::STOCK_CHANGED,
    ev::RESERVATION_HELD,
    ev::RESERVATION_COMMITTED,
    ev::RESERVATION_FULFILLED,
    ev::RESERVATION_RELEASED,
    ev::RESERVATION_EXPIRED,
];

/// Records events: copied to the cloud's analytics sink first (idempotent per id), then into the store, whose
/// transaction decides what is new. A failure anywhere is transient for the sender, who delivers again.
#[derive(Clone)]
pub struct Aggregator {
    pub services: Services,
}

impl Aggregator {
    pub fn new(services: Services) -> Self {
        Self { services }
    }

    pub async fn record(&self, events: Vec<ObservedEvent>) -> Result<Recorded, StoreError> {
        let mut total = Recorded::default();
        for chunk in events.chunks(RECORD_BATCH_MAX) {
            if let Some(copy) = &self.services.analytics_copy {
                copy.write(chunk).await?;
            }
            let r = self.services.recorder().record_events(chunk.to_vec()).await?;
            total.recorded += r.recorded;
            total.duplicates += r.duplicates;
            total.crossings += r.crossings;
        }
        if total.crossings > 0 {
            tracing::info!(crossings = total.crossings, "stock health crossed a threshold");
        }
        Ok(total)
    }
}

/// An event as the aggregator keeps it. A movement event whose movement cannot be read is refused (422): it
/// would be dropped from the figures silently otherwise. Other types are kept raw.
pub fn observe(env: &Envelope, body: Value) -> Result<ObservedEvent, ApiError> {
    let movement = if MOVEMENT_TYPES.contains(&env.ty.as_str()) {
        let d = MovementData::deserialize(&env.data)
            .map_err(|e| ApiError::invalid("invalid_event", format!("{}: {e}", env.ty)))?;
        let at = DateTime::parse_from_rfc3339(&d.movement.at)
            .map_err(|e| ApiError::invalid("invalid_event", format!("movement.at: {e}")))?
            .with_timezone(&Utc);
        Some(ObservedMovement {
            id: d.movement.id,
            at,
            sku: d.movement.sku,
            location: d.movement.location,
            kind: d.movement.kind,
            on_hand_delta: d.movement.deltas.on_hand,
            reserved_delta: d.movement.deltas.reserved,
            committed_delta: d.movement.deltas.committed,
            cause: d.movement.cause,
            on_hand: d.levels.on_hand,
            reserved: d.levels.reserved,
            committed: d.levels.committed,
            safety_stock: d.levels.safety_stock,
            available: d.levels.available,
        })
    } else {
        None
    };
    Ok(ObservedEvent { id: env.id.clone(), ty: env.ty.clone(), body, movement })
}

/// A structured CloudEvent (as the outbox holds them).
pub fn observe_structured(event: &Value) -> Result<ObservedEvent, ApiError> {
    let text = |k: &str| {
        event[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request("malformed_event", format!("the event has no `{k}`")))
    };
    let env = Envelope { ty: text("type")?, source: text("source")?, id: text("id")?, data: event["data"].clone() };
    observe(&env, event.clone())
}

/// The envelope back as a structured CloudEvent, for the raw table.
fn structured(env: &Envelope, extra: &IncomingEvent) -> Value {
    let mut event = CloudEvent::new(&env.ty, env.id.clone(), env.source.clone(), env.data.clone());
    event.subject = extra.subject.clone();
    event.time = extra.time.clone();
    event.to_value()
}

/// A Pub/Sub message's event, which has no content type of its own (the message is JSON).
fn message_body(env: &Envelope) -> Value {
    CloudEvent::new(&env.ty, env.id.clone(), env.source.clone(), env.data.clone()).without_content_type().to_value()
}

/// The local wiring: every relayed event is recorded before it goes on to `next` (the live feed), so a
/// listener told of an event reads figures that include it. A recording failure stops the round; the relay
/// publishes the events again later, and recording them twice is a no-op.
pub struct Aggregating {
    pub aggregator: Aggregator,
    pub next: Arc<dyn EventSink>,
}

#[async_trait]
impl EventSink for Aggregating {
    async fn publish(&self, events: &[OutboxEvent]) -> Result<(), SinkError> {
        let observed = events
            .iter()
            .filter_map(|e| match observe_structured(&e.event) {
                Ok(o) => Some(o),
                Err(err) => {
                    // Our own outbox wrote it; unreadable means a bug, and holding the feed back would not help.
                    tracing::error!(id = %e.id, error = ?err, "an outbox event the aggregator cannot read");
                    None
                }
            })
            .collect();
        if let Err(e) = self.aggregator.record(observed).await {
            return Err(SinkError { published: Vec::new(), reason: format!("analytics: {e}") });
        }
        self.next.publish(events).await
    }
}

/// Puts the aggregator in front of the services' event sink (local mode).
pub fn aggregate_locally(mut services: Services) -> Services {
    let next = services.events.clone();
    services.events = Arc::new(Aggregating { aggregator: Aggregator::new(services.clone()), next });
    services
}

/// The cloud's buses and sinks where configured: Pub/Sub for the alerts it publishes, BigQuery for analytics.
pub fn wire(
    services: Services,
    settings: &stockroom_runtime::Settings,
) -> Result<Services, Box<dyn std::error::Error + Send + Sync>> {
    stockroom_gcp::with_bigquery(stockroom_gcp::with_pubsub(services, settings)?, settings)
}

#[derive(OpenApi)]
#[openapi(
    paths(stock_health, sales, top_sellers),
    components(schemas(Health, HealthStatus, SalesPoint, TopSeller, ErrorBody, Rfc3339)),
    tags((name = "analytics", description = "Stock health, sales series and top sellers"))
)]
pub struct ApiDoc;

/// The analytics reads: what `stockroom serve` merges.
pub fn api_router(services: Services) -> Router {
    Router::new()
        .route("/v1/analytics/stock-health", get(stock_health))
        .route("/v1/analytics/skus/{sku}/sales", get(sales))
        .route("/v1/analytics/top-sellers", get(top_sellers))
        .with_state(services)
}

/// The aggregator function: the reads, and `inventory-events` in.
pub fn router(aggregator: Aggregator) -> Router {
    let oidc = aggregator.services.oidc.clone();
    let api = api_router(aggregator.services.clone());
    let inbound = Router::new()
        .route("/events", post(events_in))
        .route("/pubsub/push", post(pubsub_push))
        .route("/jobs/relay-outbox", post(relay_outbox))
        .route_layer(axum::middleware::from_fn_with_state(oidc, stockroom_runtime::oidc::require_token))
        .with_state(aggregator);
    api.merge(inbound)
}

fn recorded(r: Recorded) -> Response {
    let outcome = if r.recorded > 0 { "recorded" } else { "duplicate" };
    ok(
        StatusCode::OK,
        &json!({ "outcome": outcome, "recorded": r.recorded, "duplicates": r.duplicates, "crossings": r.crossings }),
    )
}

/// CloudEvents over HTTP, binary or structured, as Eventarc sends them: Stockroom's events directly, or
/// wrapped in Pub/Sub's `messagePublished`.
#[utoipa::path(post, path = "/events", tag = "analytics",
    responses((status = 200, description = "recorded, or a duplicate"), (status = 400, description = "not a valid CloudEvent"),
              (status = 401, description = "no valid OIDC token"), (status = 422, description = "a movement event that cannot be read"),
              (status = 503, description = "transient: deliver again")))]
pub async fn events_in(
    State(aggregator): State<Aggregator>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let incoming = events::parse_cloudevents(&headers, &body, false)?;
    let mut observed = Vec::with_capacity(incoming.len());
    for e in &incoming {
        observed.push(if e.ty == events::MESSAGE_PUBLISHED {
            let env = envelope_of_message(&events::message_published(e)?)?;
            observe(&env, message_body(&env))?
        } else {
            let env =
                Envelope { ty: e.ty.clone(), source: e.source.clone(), id: e.id.clone(), data: e.data_json("event")? };
            observe(&env, structured(&env, e))?
        });
    }
    Ok(recorded(aggregator.record(observed).await?))
}

/// A Pub/Sub push subscription's request.
#[utoipa::path(post, path = "/pubsub/push", tag = "analytics",
    responses((status = 200, description = "recorded, or a duplicate"), (status = 400, description = "not a push envelope"),
              (status = 401, description = "no valid OIDC token"), (status = 422, description = "a movement event that cannot be read"),
              (status = 503, description = "transient: Pub/Sub redelivers")))]
pub async fn pubsub_push(State(aggregator): State<Aggregator>, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let env = envelope_of_message(&events::parse_push(&body)?)?;
    let observed = observe(&env, message_body(&env))?;
    Ok(recorded(aggregator.record(vec![observed]).await?))
}

/// Cloud Scheduler target: publishes the threshold events waiting in the outbox.
#[utoipa::path(post, path = "/jobs/relay-outbox", tag = "analytics", responses((status = 200, description = "`{\"published\": n}`")))]
pub async fn relay_outbox(State(aggregator): State<Aggregator>) -> Result<Response, ApiError> {
    let published = relay::relay(&aggregator.services, 100).await?;
    Ok(ok(StatusCode::OK, &json!({ "published": published })))
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::bad_query("invalid_query", e.body_text()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Figures at this location only; without it (or empty), each sku's total across locations.
    #[param(pattern = "^[A-Za-z0-9._:/-]{0,64}$")]
    location: Option<String>,
    /// `ok`, `low` or `depleted`; without it (or empty), every status.
    #[param(pattern = "^(ok|low|depleted)?$")]
    status: Option<String>,
}

/// Stock health per sku: available, units sold, velocity, days of cover, projected stock-out and status.
#[utoipa::path(get, path = "/v1/analytics/stock-health", tag = "analytics", params(HealthQuery),
    responses((status = 200, body = [Health]),
              (status = 400, response = inline(BadRequest)),
              (status = 422, body = ErrorBody, description = "`invalid_location`"),
              (status = 503, response = inline(Unavailable))))]
pub async fn stock_health(State(services): State<Services>, q: QueryResult<HealthQuery>) -> Result<Response, ApiError> {
    let q = query(q)?;
    let location = q.location.as_deref().filter(|l| !l.is_empty()).map(fields::location).transpose()?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            HealthStatus::parse(s)
                .ok_or_else(|| ApiError::bad_query("invalid_status", "status must be one of ok, low, depleted"))?,
        ),
    };
    let mut rows = services.analytics.stock_health(location.as_ref().map(|l| l.as_str()), services.clock.now()).await?;
    if let Some(status) = status {
        rows.retain(|r| r.status == status);
    }
    Ok(ok(StatusCode::OK, &rows))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SalesQuery {
    /// `hour` (default) or `day`.
    #[param(pattern = "^(hour|day)?$")]
    bucket: Option<String>,
    /// RFC 3339; default `to` minus 48 hours (hour buckets) or 30 days (day buckets). Not after `to`, and at
    /// most `SERIES_POINTS_MAX` buckets before it.
    #[param(value_type = Option<Rfc3339>)]
    from: Option<String>,
    /// RFC 3339; default now.
    #[param(value_type = Option<Rfc3339>)]
    to: Option<String>,
}

fn instant(raw: &str, field: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad_query("invalid_time", format!("{field} must be an RFC 3339 time: {e}")))
}

/// Whether a series over `from..=to` can be told in RFC 3339, whose years run from 0000 to 9999 (in UTC, where
/// the answer's bucket starts are): `to=0000-01-01T00:00:00Z` would otherwise start its default span in year -1.
fn writable(from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let year = |t: DateTime<Utc>| chrono::Datelike::year(&t);
    (0..=9999).contains(&year(from)) && (0..=9999).contains(&year(to))
}

/// A sku's sales in hour or day buckets (UTC), zeros included: net units sold and orders.
#[utoipa::path(get, path = "/v1/analytics/skus/{sku}/sales", tag = "analytics", params(("sku" = Sku, Path), SalesQuery),
    responses((status = 200, body = [SalesPoint]),
              (status = 400, response = inline(BadRequest)),
              (status = 422, body = ErrorBody, description = "`invalid_sku`"),
              (status = 503, response = inline(Unavailable))))]
pub async fn sales(
    State(services): State<Services>,
    Path(sku): Path<String>,
    q: QueryResult<SalesQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let sku = fields::sku(&sku)?;
    let bucket = match q.bucket.as_deref() {
        None | Some("") => Bucket::Hour,
        Some(b) => {
            Bucket::parse(b).ok_or_else(|| ApiError::bad_query("invalid_bucket", "bucket must be hour or day"))?
        }
    };
    let to = q.to.as_deref().map(|t| instant(t, "to")).transpose()?.unwrap_or_else(|| services.clock.now());
    let from = q.from.as_deref().map(|t| instant(t, "from")).transpose()?.unwrap_or(to - bucket.default_span());
    if to < from {
        return Err(ApiError::bad_query("invalid_span", "to is before from"));
    }
    if !writable(from, to) {
        return Err(ApiError::bad_query(
            "invalid_time",
            "from and to (and the default span before to) must fall in the years 0000 to 9999, in UTC",
        ));
    }
    if series_starts(bucket, from, to).is_none() {
        return Err(ApiError::bad_query(
            "span_too_long",
            format!(
                "a series has at most {} points; use day buckets or a shorter span",
                stockroom_domain::analytics::SERIES_POINTS_MAX
            ),
        ));
    }
    Ok(ok(StatusCode::OK, &services.analytics.sales(sku.as_str(), bucket, from, to).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// `24h` (default) or `7d`.
    #[param(pattern = "^(24h|7d)?$")]
    window: Option<String>,
    /// 1 to 100, default 10.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// The best sellers over the trailing window: net units sold and orders.
#[utoipa::path(get, path = "/v1/analytics/top-sellers", tag = "analytics", params(TopQuery),
    responses((status = 200, body = [TopSeller]),
              (status = 400, response = inline(BadRequest)),
              (status = 503, response = inline(Unavailable))))]
pub async fn top_sellers(State(services): State<Services>, q: QueryResult<TopQuery>) -> Result<Response, ApiError> {
    let q = query(q)?;
    let window = match q.window.as_deref() {
        None | Some("") => Window::Day,
        Some(w) => Window::parse(w).ok_or_else(|| ApiError::bad_query("invalid_window", "window must be 24h or 7d"))?,
    };
    // `limit=` is no number, as for every other `limit` (`/v1/movements`, `/jobs/expire-reservations`).
    let limit = match q.limit.as_deref() {
        None => TOP_SELLERS_DEFAULT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=TOP_SELLERS_MAX).contains(n))
            .ok_or_else(|| ApiError::bad_query("invalid_limit", format!("limit must be 1 to {TOP_SELLERS_MAX}")))?,
    };
    Ok(ok(StatusCode::OK, &services.analytics.top_sellers(window, limit, services.clock.now()).await?))
}
