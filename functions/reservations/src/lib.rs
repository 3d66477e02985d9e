//! `reservations`: checkout holds that expire, and their commit, fulfilment and release; plus the expiry job.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Number, Value, json};
use stockroom_domain::{CommitLine, HoldRequest, Location, ReservationId, Sku};
use stockroom_runtime::Path;
use stockroom_runtime::fields::{HOLD_LINES_MAX as LINES_MAX, HoldLineInput};
use stockroom_runtime::openapi::{BadRequest, ErrorBody, TooLarge, Unauthenticated, Unavailable, UnsupportedMedia};
use stockroom_runtime::{
    ApiError, JsonBody, RawBody, Services, fields, idempotency, idempotency_key, ok, parse, respond,
};
use stockroom_store::{Command, Ledger, ReservationView};
use utoipa::OpenApi;

/// Lapsed holds one run of the expiry job books at most, by default and at most.
pub const EXPIRE_BATCH_DEFAULT: i64 = 1_000;
pub const EXPIRE_BATCH_MAX: i64 = 10_000;

pub fn router(services: Services) -> Router {
    let jobs = Router::new().route("/jobs/expire-reservations", post(expire_job)).route_layer(
        axum::middleware::from_fn_with_state(services.oidc.clone(), stockroom_runtime::oidc::require_token),
    );
    Router::new()
        .merge(jobs)
        .route("/v1/reservations", post(hold))
        .route("/v1/reservations/{id}", get(get_reservation))
        .route("/v1/reservations/{id}/commit", post(commit))
        .route("/v1/reservations/{id}/fulfil", post(fulfil))
        .route("/v1/reservations/{id}/release", post(release))
        .with_state(services)
}

#[derive(OpenApi)]
#[openapi(
    paths(hold, get_reservation, commit, fulfil, release, expire_job),
    components(schemas(ReservationBody, LineBody, CommitBody, CommitLineBody, ReservationView, Expired, ErrorBody)),
    tags((name = "reservations", description = "Holds at checkout, sales, shipments and returns"))
)]
pub struct ApiDoc;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    #[schema(value_type = Sku)]
    pub sku: String,
    /// Whole units: 1 to 10^12.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub quantity: Number,
    /// Hold only here; without it the line is sourced across locations by priority, split if needed.
    #[schema(value_type = Option<Location>)]
    pub location: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationBody {
    /// Makes the request idempotent: the same id and body answer the first answer again.
    #[schema(value_type = Option<ReservationId>)]
    pub reservation_id: Option<String>,
    /// 1 to 100 lines, each SKU at most once: all are held, or none.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineBody>,
    /// 1 to 86400; default 900.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 86_400)]
    pub ttl_seconds: Option<Number>,
    /// The caller's reference (a cart, an order number): 1 to 256 bytes, not all blank.
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    pub reference: Option<String>,
}

impl TryFrom<&ReservationBody> for HoldRequest {
    type Error = ApiError;

    fn try_from(b: &ReservationBody) -> Result<Self, ApiError> {
        let lines: Vec<HoldLineInput<'_>> = b
            .lines
            .iter()
            .map(|l| HoldLineInput { sku: &l.sku, quantity: &l.quantity, location: l.location.as_deref() })
            .collect();
        fields::hold_request(&lines, b.ttl_seconds.as_ref(), b.reference.as_deref())
    }
}

/// Hold stock for a checkout: every line or none.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", request_body = ReservationBody,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "1 to 255 printable ASCII characters; the key of a hold without `reservation_id`")),
    responses((status = 201, body = ReservationView, description = "held",
               links(("GetReservation" = (operation_id = "get_reservation", parameters(("id" = "$response.body#/reservation_id")))),
                     ("CommitReservation" = (operation_id = "commit", parameters(("id" = "$response.body#/reservation_id")))),
                     ("ReleaseReservation" = (operation_id = "release", parameters(("id" = "$response.body#/reservation_id")))))),
              (status = 200, body = ReservationView, description = "the same request again"),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 409, body = ErrorBody, description = "`insufficient_stock` (with `shortfalls`, nothing held), `reservation_exists` or `idempotency_in_progress`"),
              (status = 413, response = inline(TooLarge)), (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "invalid (`invalid_lines`, `invalid_sku`, `invalid_quantity`, `invalid_ttl`, …), `duplicate_line`, `unknown_location` or `idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn hold(
    State(ledger): State<Arc<dyn Ledger>>,
    headers: HeaderMap,
    body: JsonBody<ReservationBody>,
) -> Result<Response, ApiError> {
    let request = HoldRequest::try_from(&body.value)?;
    let given = body.value.reservation_id.as_deref().map(fields::reservation_id).transpose()?;
    let path = "/v1/reservations";
    // A client's reservation_id is the idempotency key of the hold, whatever Idempotency-Key comes with it
    // (a retry may well carry a fresh one); the header is the key only for holds without an id. A header that
    // breaks the key's rules is refused either way, as on every other POST.
    let header = idempotency_key(&headers)?.map(|key| idempotency(key, &Method::POST, path, &body.raw)).transpose()?;
    let idem = match &given {
        Some(id) => Some(idempotency(&format!("reservation:{id}"), &Method::POST, path, &body.raw)?),
        None => header,
    };
    let id = match given {
        Some(id) => id,
        None => ReservationId::parse(&uuid::Uuid::now_v7().to_string())
            .map_err(|e| ApiError::invalid("invalid_reservation_id", e.to_string()))?,
    };
    Ok(respond(ledger.execute(Command::Hold { id, request }, idem, None).await?))
}

/// A reservation and its state: held, committed, fulfilled, released or expired.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", params(("id" = ReservationId, Path)),
    responses((status = 200, body = ReservationView), (status = 400, response = inline(BadRequest)),
              (status = 404, body = ErrorBody, description = "`unknown_reservation` (an id outside the alphabet too)"),
              (status = 503, response = inline(Unavailable))))]
async fn get_reservation(State(ledger): State<Arc<dyn Ledger>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = fields::reservation_id(&id).map_err(|_| unknown(&id))?;
    match ledger.reservation(&id).await? {
        Some(view) => Ok(ok(StatusCode::OK, &view)),
        None => Err(unknown(id.as_str())),
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found("unknown_reservation", "no such reservation").with_details(json!({ "reservation_id": id }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitLineBody {
    #[schema(value_type = Sku)]
    pub sku: String,
    /// Whole units: 1 to 10^12.
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub quantity: Number,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// A partial commit: these quantities are sold, everything else is released. 1 to 100 lines, each SKU at
    /// most once; null or left out sells everything held.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Option<Vec<CommitLineBody>>,
}

/// What the `Idempotency-Key` of a reservation step or of the expiry job is, for the OpenAPI description.
const IDEMPOTENCY_KEY: &str =
    "1 to 255 printable ASCII characters: the same key and request answer the first answer again";

/// An optional JSON body: empty means `{}`.
fn optional_body<T: serde::de::DeserializeOwned>(raw: &RawBody) -> Result<(Option<T>, Value), ApiError> {
    if raw.0.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, json!({})));
    }
    let parsed = parse::<T>(&raw.0)?;
    Ok((Some(parsed.value), parsed.raw))
}

/// The `Idempotency-Key` of a reservation step, bound to the step and its body.
fn step_idempotency(
    headers: &HeaderMap,
    path: &str,
    body: &Value,
) -> Result<Option<stockroom_store::Idempotency>, ApiError> {
    idempotency_key(headers)?.map(|key| idempotency(key, &Method::POST, path, body)).transpose()
}

/// Sell what is held (or part of it; the rest is released).
#[utoipa::path(post, path = "/v1/reservations/{id}/commit", tag = "reservations",
    params(("id" = ReservationId, Path),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY_KEY)),
    request_body(content = CommitBody, description = "Optional: no body (or blanks) sells everything held"),
    responses((status = 200, body = ReservationView,
               links(("FulfilReservation" = (operation_id = "fulfil", parameters(("id" = "$response.body#/reservation_id")))),
                     ("ReleaseReservation" = (operation_id = "release", parameters(("id" = "$response.body#/reservation_id")))))),
              (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 404, body = ErrorBody, description = "`unknown_reservation`"),
              (status = 409, body = ErrorBody, description = "`invalid_state` or `idempotency_in_progress`"),
              (status = 410, body = ErrorBody, description = "`reservation_expired`"),
              (status = 413, response = inline(TooLarge)),
              (status = 422, body = ErrorBody, description = "invalid lines, `duplicate_line`, `line_not_in_reservation`, `commit_exceeds_held` or `idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn commit(
    State(ledger): State<Arc<dyn Ledger>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let id = fields::reservation_id(&id).map_err(|_| unknown(&id))?;
    let (body, raw_json) = optional_body::<CommitBody>(&raw)?;
    let lines = match body.and_then(|b| b.lines) {
        None => None,
        Some(lines) if lines.is_empty() || lines.len() > LINES_MAX => {
            return Err(ApiError::invalid("invalid_lines", format!("send 1 to {LINES_MAX} lines, or no body")));
        }
        Some(lines) => Some(
            lines
                .iter()
                .map(|l| {
                    Ok(CommitLine { sku: fields::sku(&l.sku)?, quantity: fields::quantity(&l.quantity, "quantity")? })
                })
                .collect::<Result<Vec<_>, ApiError>>()?,
        ),
    };
    let idem = step_idempotency(&headers, &format!("/v1/reservations/{id}/commit"), &raw_json)?;
    Ok(respond(ledger.execute(Command::Commit { id, lines }, idem, None).await?))
}

/// Shipped: the committed units leave on_hand.
#[utoipa::path(post, path = "/v1/reservations/{id}/fulfil", tag = "reservations",
    params(("id" = ReservationId, Path),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY_KEY)),
    request_body(content = Value, description = "Optional and not read: any JSON is only part of the idempotency hash"),
    responses((status = 200, body = ReservationView), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 404, body = ErrorBody, description = "`unknown_reservation`"),
              (status = 409, body = ErrorBody, description = "`invalid_state` or `idempotency_in_progress`"),
              (status = 413, response = inline(TooLarge)),
              (status = 422, body = ErrorBody, description = "`negative_on_hand` (a count left less on hand than was sold) or `idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn fulfil(
    State(ledger): State<Arc<dyn Ledger>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: RawBody,
) -> Result<Response, ApiError> {
    bodiless_step(ledger, &id, "fulfil", &headers, &raw, |id| Command::Fulfil { id }).await
}

/// Cancel: a hold is released, a sale returned. Releasing again answers 200 and changes nothing.
#[utoipa::path(post, path = "/v1/reservations/{id}/release", tag = "reservations",
    params(("id" = ReservationId, Path),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY_KEY)),
    request_body(content = Value, description = "Optional and not read: any JSON is only part of the idempotency hash"),
    responses((status = 200, body = ReservationView), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 404, body = ErrorBody, description = "`unknown_reservation`"),
              (status = 409, body = ErrorBody, description = "`invalid_state` (fulfilled) or `idempotency_in_progress`"),
              (status = 413, response = inline(TooLarge)),
              (status = 422, body = ErrorBody, description = "`idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn release(
    State(ledger): State<Arc<dyn Ledger>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: RawBody,
) -> Result<Response, ApiError> {
    bodiless_step(ledger, &id, "release", &headers, &raw, |id| Command::Release { id }).await
}

/// A reservation step that takes no body (any JSON sent is only part of the idempotency hash).
async fn bodiless_step(
    ledger: Arc<dyn Ledger>,
    id: &str,
    action: &str,
    headers: &HeaderMap,
    raw: &RawBody,
    command: impl FnOnce(ReservationId) -> Command,
) -> Result<Response, ApiError> {
    let id = fields::reservation_id(id).map_err(|_| unknown(id))?;
    let (_, raw_json) = optional_body::<Value>(raw)?;
    let idem = step_idempotency(headers, &format!("/v1/reservations/{id}/{action}"), &raw_json)?;
    Ok(respond(ledger.execute(command(id), idem, None).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpireQuery {
    /// Lapsed holds to book in this run: 1 to 10000, default 1000.
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<i64>,
}

/// What the expiry job answers, for the OpenAPI description (`render` writes it).
#[derive(utoipa::ToSchema)]
pub struct Expired {
    /// Lapsed holds booked as expired by this run.
    pub expired: u64,
}

/// Cloud Scheduler target: books lapsed holds as expired. Not needed for correctness (expiry is applied at read
/// time); it keeps the ledger's movements current. Safe to run twice.
#[utoipa::path(post, path = "/jobs/expire-reservations", tag = "reservations",
    params(ExpireQuery, ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY_KEY)),
    responses((status = 200, body = Expired), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 409, body = ErrorBody, description = "`idempotency_in_progress`"),
              (status = 422, body = ErrorBody, description = "`idempotency_mismatch`"),
              (status = 503, response = inline(Unavailable))))]
async fn expire_job(
    State(ledger): State<Arc<dyn Ledger>>,
    headers: HeaderMap,
    query: Result<Query<ExpireQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_query("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(EXPIRE_BATCH_DEFAULT);
    if !(1..=EXPIRE_BATCH_MAX).contains(&limit) {
        return Err(ApiError::bad_query("invalid_limit", format!("limit must be 1 to {EXPIRE_BATCH_MAX}")));
    }
    let idem = step_idempotency(&headers, &format!("/jobs/expire-reservations?limit={limit}"), &json!({}))?;
    Ok(respond(ledger.expire_due(limit, idem).await?))
}
