//! `stock-updates`: locations, adjustments, stock levels, the movement ledger and SKU policies.
//!
//! A router over the store; `main.rs` serves it alone, `stockroom serve` merges it with the others.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::Number;
use stockroom_domain::{Change, ChangeOp, Location, Sku};
use stockroom_runtime::Path;
use stockroom_runtime::openapi::{BadRequest, ErrorBody, TooLarge, Unauthenticated, Unavailable, UnsupportedMedia};
use stockroom_runtime::{ApiError, JsonBody, Services, fields, idempotency, idempotency_key, ok, respond};
use stockroom_store::{
    Command, Ledger, LevelRow, LocationRecord, MovementFilter, MovementPage, Policy, PolicyUpdate, StockView,
};
use utoipa::OpenApi;
use utoipa::openapi::Ref;
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};

/// Changes in one adjustment batch at most.
pub const CHANGES_MAX: usize = 500;
/// SKUs in one `GET /v1/stock?skus=` at most.
pub const STOCK_SKUS_MAX: usize = 100;
/// Movements in one page at most, and by default.
pub const MOVEMENTS_LIMIT_MAX: i64 = 1_000;
pub const MOVEMENTS_LIMIT_DEFAULT: i64 = 100;
/// Location priorities run from 0 (sourced first) to this.
pub const PRIORITY_MAX: i64 = 1_000_000;

pub mod commands;
mod inbound;

/// Applies commands from the local queue with the same code as `/events` and `/pubsub/push`.
pub fn queued_handler() -> stockroom_runtime::worker::Handler {
    Arc::new(|services: Services, c: stockroom_store::QueuedCommand| {
        Box::pin(async move {
            let envelope = commands::Envelope { ty: c.ty, source: c.source, id: c.id, data: c.data };
            commands::apply(services.ledger().as_ref(), &envelope).await.map(|_| ())
        })
    })
}

pub fn router(services: Services) -> Router {
    // Pushes, Eventarc and Cloud Scheduler need a Google-signed token when authentication is configured.
    let authenticated = Router::new()
        .route("/events", post(inbound::events))
        .route("/pubsub/push", post(inbound::pubsub_push))
        .route("/jobs/relay-outbox", post(inbound::relay_outbox))
        .route_layer(axum::middleware::from_fn_with_state(
            services.oidc.clone(),
            stockroom_runtime::oidc::require_token,
        ));
    Router::new()
        .merge(authenticated)
        .route("/v1/locations", get(list_locations))
        .route("/v1/locations/{location}", put(put_location))
        .route("/v1/adjustments", post(adjust))
        .route("/v1/stock", get(stock_many))
        .route("/v1/stock/{sku}", get(stock_one))
        .route("/v1/movements", get(movements))
        .route("/v1/skus/{sku}/policy", put(put_policy))
        .with_state(services)
}

#[derive(OpenApi)]
#[openapi(
    paths(put_location, list_locations, adjust, stock_one, stock_many, movements, put_policy, inbound::events,
          inbound::pubsub_push, inbound::relay_outbox),
    components(schemas(LocationBody, AdjustmentBody, ChangeBody, PolicyBody, LocationRecord, LocationList, StockView,
        MovementPage, Policy, AdjustmentAnswer, ErrorBody, inbound::EventOutcome, inbound::Published)),
    tags((name = "stock", description = "Locations, adjustments, levels and the ledger"))
)]
pub struct ApiDoc;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    /// Display name, 1 to 256 bytes, not all blank; defaults to the location id.
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub name: Option<String>,
    /// Lower is sourced first. 0 to 1,000,000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub priority: i64,
}

/// Create or update a location.
#[utoipa::path(put, path = "/v1/locations/{location}", tag = "stock", request_body = LocationBody,
    params(("location" = Location, Path)),
    responses((status = 200, body = LocationRecord, description = "updated"), (status = 201, body = LocationRecord, description = "created"),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)), (status = 413, response = inline(TooLarge)),
              (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "invalid_location, invalid_priority, invalid_text or invalid_request"),
              (status = 503, response = inline(Unavailable))))]
async fn put_location(
    State(ledger): State<Arc<dyn Ledger>>,
    Path(location): Path<String>,
    body: JsonBody<LocationBody>,
) -> Result<Response, ApiError> {
    let location = fields::location(&location)?;
    let name = match &body.value.name {
        Some(n) => fields::text(n, "name", fields::TEXT_BYTES_MAX)?,
        None => location.to_string(),
    };
    let priority = body.value.priority;
    if !(0..=PRIORITY_MAX).contains(&priority) {
        return Err(ApiError::invalid("invalid_priority", format!("priority must be 0 to {PRIORITY_MAX}")));
    }
    let (record, created) = ledger.put_location(location, name, priority).await?;
    Ok(ok(if created { StatusCode::CREATED } else { StatusCode::OK }, &record))
}

/// What `GET /v1/locations` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LocationList {
    /// In sourcing order.
    pub locations: Vec<LocationRecord>,
}

/// Every location, in sourcing order.
#[utoipa::path(get, path = "/v1/locations", tag = "stock",
    responses((status = 200, body = LocationList), (status = 503, response = inline(Unavailable))))]
async fn list_locations(State(ledger): State<Arc<dyn Ledger>>) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &LocationList { locations: ledger.locations().await? }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    #[schema(value_type = Sku)]
    pub sku: String,
    #[schema(value_type = Location)]
    pub location: String,
    /// Add (or, negative, remove) this many units: not 0, at most 10^12 either way. Exactly one of `delta` and
    /// `set`.
    #[schema(schema_with = delta_schema)]
    pub delta: Option<Number>,
    /// on_hand becomes exactly this (a count): 0 to 10^12.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub set: Option<Number>,
    /// Why: 1 to 256 bytes, not all blank.
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub reason: String,
    /// The caller's reference (a delivery note): 1 to 256 bytes, not all blank.
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub reference: Option<String>,
    /// Compare-and-set: refused with 409 `on_hand_mismatch` unless on_hand is this now.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub expected_on_hand: Option<Number>,
}

/// `delta`: a whole number, not 0, within ±10^12 (`stockroom_domain::quantity::check_delta`); null means absent.
fn delta_schema() -> Schema {
    let quantity_max = stockroom_domain::quantity::QUANTITY_MAX;
    let units =
        |min: i64, max: i64| ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min)).maximum(Some(max));
    OneOfBuilder::new()
        .item(units(-quantity_max, -1))
        .item(units(1, quantity_max))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("Add (or, negative, remove) this many units: not 0, at most 10^12 either way."))
        .into()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// 1 to 500 changes, applied all or none.
    #[schema(schema_with = changes_schema)]
    pub changes: Vec<ChangeBody>,
}

/// `changes`: 1 to [`CHANGES_MAX`] changes, each with exactly one of `delta` and `set` (null counts as absent),
/// which `ChangeBody`'s own schema cannot say.
fn changes_schema() -> Schema {
    let given = |field: &str| {
        ObjectBuilder::new().property(field, ObjectBuilder::new().schema_type(Type::Integer)).required(field)
    };
    let change = AllOfBuilder::new()
        .item(Ref::from_schema_name("ChangeBody"))
        .item(OneOfBuilder::new().item(given("delta")).item(given("set")));
    ArrayBuilder::new()
        .items(change)
        .min_items(Some(1))
        .max_items(Some(CHANGES_MAX))
        .description(Some("1 to 500 changes, applied all or none; each has exactly one of `delta` and `set`."))
        .into()
}

/// What `POST /v1/adjustments` answers, for the OpenAPI description.
#[derive(utoipa::ToSchema)]
pub struct AdjustmentAnswer {
    /// Each touched (sku, location) after the batch.
    pub levels: Vec<LevelRow>,
}

impl TryFrom<&ChangeBody> for Change {
    type Error = ApiError;

    fn try_from(c: &ChangeBody) -> Result<Self, ApiError> {
        let op = match (&c.delta, &c.set) {
            (Some(d), None) => ChangeOp::Delta(fields::delta(d)?),
            (None, Some(s)) => ChangeOp::Set(fields::level(s, "set")?),
            _ => return Err(ApiError::invalid("invalid_change", "each change needs exactly one of delta and set")),
        };
        Ok(Change {
            sku: fields::sku(&c.sku)?,
            location: fields::location(&c.location)?,
            op,
            reason: fields::text(&c.reason, "reason", fields::TEXT_BYTES_MAX)?,
            reference: c
                .reference
                .as_deref()
                .map(|r| fields::text(r, "reference", fields::TEXT_BYTES_MAX))
                .transpose()?,
            expected_on_hand: c.expected_on_hand.as_ref().map(|e| fields::level(e, "expected_on_hand")).transpose()?,
        })
    }
}

/// Apply a batch of changes, all or nothing. Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/adjustments", tag = "stock", request_body = AdjustmentBody,
    params(("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$",
            description = "Required: 1 to 255 printable ASCII characters. The same key and body answer the first answer again (`Idempotent-Replayed: true`); the same key with another body is 422 `idempotency_mismatch`.")),
    responses((status = 200, body = AdjustmentAnswer),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 409, body = ErrorBody, description = "`on_hand_mismatch` (a compare-and-set lost), or `idempotency_in_progress` (with `Retry-After`)"),
              (status = 413, response = inline(TooLarge)), (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "invalid (`invalid_sku`, `invalid_quantity`, `invalid_change`, …), `unknown_location`, `negative_on_hand` or `idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn adjust(
    State(ledger): State<Arc<dyn Ledger>>,
    headers: HeaderMap,
    body: JsonBody<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let Some(key) = idempotency_key(&headers)? else {
        return Err(ApiError::bad_request(
            "idempotency_key_required",
            "POST /v1/adjustments needs an Idempotency-Key header",
        ));
    };
    let changes = &body.value.changes;
    if changes.is_empty() || changes.len() > CHANGES_MAX {
        return Err(ApiError::invalid("invalid_changes", format!("send 1 to {CHANGES_MAX} changes")));
    }
    let changes = changes.iter().map(Change::try_from).collect::<Result<Vec<_>, _>>()?;
    let idem = idempotency(key, &Method::POST, "/v1/adjustments", &body.raw)?;
    let command = Command::Adjust { changes, cause: format!("adjustment:{key}") };
    Ok(respond(ledger.execute(command, Some(idem), None).await?))
}

/// Stock of one SKU at every location, and in total.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "stock", params(("sku" = Sku, Path)),
    responses((status = 200, body = StockView), (status = 400, response = inline(BadRequest)),
              (status = 404, body = ErrorBody, description = "`unknown_sku`: no stock was ever recorded for it"),
              (status = 422, body = ErrorBody, description = "`invalid_sku`"), (status = 503, response = inline(Unavailable))))]
async fn stock_one(State(ledger): State<Arc<dyn Ledger>>, Path(sku): Path<String>) -> Result<Response, ApiError> {
    let sku = fields::sku(&sku)?;
    let mut found = ledger.stock(std::slice::from_ref(&sku)).await?;
    match found.pop() {
        Some(view) => Ok(ok(StatusCode::OK, &view)),
        None => Err(ApiError::not_found("unknown_sku", format!("no stock has ever been recorded for {sku}"))
            .with_details(serde_json::json!({ "sku": sku }))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StockQuery {
    /// Comma-separated SKUs, 1 to 100 of them (blanks around them and empty ones are skipped).
    #[param(
        required = true,
        pattern = "^[\\s,]*[A-Za-z0-9._:/-]{1,128}(\\s*,[\\s,]*[A-Za-z0-9._:/-]{1,128}){0,99}[\\s,]*$"
    )]
    pub skus: Option<String>,
}

/// Stock of several SKUs at once: a JSON array in the order asked, unknown SKUs left out.
#[utoipa::path(get, path = "/v1/stock", tag = "stock", params(StockQuery),
    responses((status = 200, body = Vec<StockView>), (status = 400, response = inline(BadRequest)),
              (status = 422, body = ErrorBody, description = "`invalid_skus` (none, or more than 100) or `invalid_sku`"),
              (status = 503, response = inline(Unavailable))))]
async fn stock_many(
    State(ledger): State<Arc<dyn Ledger>>,
    query: Result<Query<StockQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("invalid_query", e.body_text()))?;
    let raw = query.skus.unwrap_or_default();
    let names: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if names.is_empty() || names.len() > STOCK_SKUS_MAX {
        return Err(ApiError::invalid(
            "invalid_skus",
            format!("pass 1 to {STOCK_SKUS_MAX} comma-separated skus in ?skus="),
        ));
    }
    let skus = names.iter().map(|s| fields::sku(s)).collect::<Result<Vec<_>, _>>()?;
    let views = ledger.stock(&skus).await?;
    Ok(ok(StatusCode::OK, &views))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MovementQuery {
    /// Only this SKU's movements (empty: every SKU).
    #[param(pattern = "^[A-Za-z0-9._:/-]{0,128}$")]
    pub sku: Option<String>,
    /// Only this location's movements (empty: every location).
    #[param(pattern = "^[A-Za-z0-9._:/-]{0,64}$")]
    pub location: Option<String>,
    /// The `next` of the previous page (empty: from the start).
    #[param(pattern = "^[0-9A-Fa-f-]{0,64}$")]
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The ledger, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/movements", tag = "stock", params(MovementQuery),
    responses((status = 200, body = MovementPage),
              (status = 400, response = inline(BadRequest)),
              (status = 422, body = ErrorBody, description = "`invalid_sku` or `invalid_location` in the filter"),
              (status = 503, response = inline(Unavailable))))]
async fn movements(
    State(ledger): State<Arc<dyn Ledger>>,
    query: Result<Query<MovementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_query("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(MOVEMENTS_LIMIT_DEFAULT);
    if !(1..=MOVEMENTS_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad_query("invalid_limit", format!("limit must be 1 to {MOVEMENTS_LIMIT_MAX}")));
    }
    let after = match q.after.filter(|a| !a.is_empty()) {
        Some(a) if a.len() <= 64 && a.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') => Some(a),
        Some(_) => {
            return Err(ApiError::bad_query("invalid_cursor", "after must be a movement id from a previous page"));
        }
        None => None,
    };
    let filter = MovementFilter {
        sku: q.sku.filter(|s| !s.is_empty()).map(|s| fields::sku(&s)).transpose()?,
        location: q.location.filter(|s| !s.is_empty()).map(|s| fields::location(&s)).transpose()?,
        after,
        limit,
    };
    Ok(ok(StatusCode::OK, &ledger.movements(&filter).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Days of cover under which the SKU counts as low (default 7), 0 to 10^12; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub low_stock_days: Option<Option<Number>>,
    /// Available at or under this counts as low, 0 to 10^12; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub reorder_point: Option<Option<Number>>,
    /// Units kept back at every location of the SKU, never sold: 0 to 10^12.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub safety_stock: Option<Number>,
}

/// Tells a field sent as `null` (clear it) from a field left out (keep it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Number>>, D::Error> {
    Option::<Number>::deserialize(d).map(Some)
}

/// Set a SKU's policy; fields left out keep their value.
#[utoipa::path(put, path = "/v1/skus/{sku}/policy", tag = "stock", params(("sku" = Sku, Path)), request_body = PolicyBody,
    responses((status = 200, body = Policy), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 413, response = inline(TooLarge)), (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "`invalid_sku`, `invalid_quantity` or `invalid_request`"),
              (status = 503, response = inline(Unavailable))))]
async fn put_policy(
    State(ledger): State<Arc<dyn Ledger>>,
    Path(sku): Path<String>,
    body: JsonBody<PolicyBody>,
) -> Result<Response, ApiError> {
    let sku = fields::sku(&sku)?;
    let b = &body.value;
    let optional = |v: &Option<Option<Number>>, field: &'static str| -> Result<Option<Option<i64>>, ApiError> {
        v.as_ref().map(|inner| inner.as_ref().map(|n| fields::level(n, field)).transpose()).transpose()
    };
    let update = PolicyUpdate {
        low_stock_days: optional(&b.low_stock_days, "low_stock_days")?,
        reorder_point: optional(&b.reorder_point, "reorder_point")?,
        safety_stock: b.safety_stock.as_ref().map(|n| fields::level(n, "safety_stock")).transpose()?,
    };
    Ok(ok(StatusCode::OK, &ledger.put_policy(sku, update).await?))
}
