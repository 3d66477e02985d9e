//! `webhooks`: Shopify webhooks in, Stockroom commands out.
//!
//! [`shopify`] is the pure core: signature check, headers, payloads and the commands they become. The route
//! here checks the signature over the raw body, turns the webhook into commands and hands them to the command
//! bus (the durable local queue, or Pub/Sub), answering in milliseconds; stock-updates applies them. Nothing
//! of the customer (name, email, address, phone) is ever read, so nothing of it can leave.

pub mod shopify;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use stockroom_domain::{Location, Sku};
use stockroom_runtime::Path;
use stockroom_runtime::openapi::{BadRequest, ErrorBody, TooLarge, Unauthenticated, Unavailable, UnsupportedMedia};
use stockroom_runtime::{ApiError, Fault, JsonBody, RawBody, Services, fields, ok};
use stockroom_store::QueuedCommand;
use utoipa::OpenApi;

/// Where commands made from webhooks say they come from.
pub const SOURCE: &str = "//stockroom/webhooks";

/// The webhooks function's own settings, besides the shared ones.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookSettings {
    /// Shopify's webhook secrets, comma-separated (two during a rotation).
    #[arg(long, env = "STOCKROOM_SHOPIFY_SECRETS", default_value = "", hide_env_values = true, value_parser = stockroom_runtime::settings::secret)]
    pub shopify_secrets: SecretString,
    /// Where restocked refund lines go when Shopify's location is not mapped.
    #[arg(long, env = "STOCKROOM_SHOPIFY_DEFAULT_LOCATION", default_value = "")]
    pub shopify_default_location: String,
}

#[derive(Clone)]
struct WebhookState {
    services: Services,
    secrets: Arc<shopify::Secrets>,
    default_location: Arc<str>,
}

pub fn router(services: Services, settings: &WebhookSettings) -> Router {
    let state = WebhookState {
        services,
        secrets: Arc::new(shopify::Secrets::parse(settings.shopify_secrets.expose_secret())),
        default_location: settings.shopify_default_location.as_str().into(),
    };
    Router::new()
        .route("/webhooks/shopify", post(shopify_webhook))
        .route("/v1/shopify/items/{inventory_item_id}", put(put_item))
        .route("/v1/shopify/locations/{location_id}", put(put_location))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(shopify_webhook, put_item, put_location),
    components(schemas(ItemBody, LocationBody, ItemMapping, LocationMapping, WebhookOutcome, ErrorBody)),
    tags((name = "webhooks", description = "Shopify in")))]
pub struct ApiDoc;

fn unauthorized(reason: &'static str) -> Response {
    ApiError::new(Fault::Unauthorized, "unauthorized", "the webhook signature does not verify")
        .with_details(json!({ "reason": reason }))
        .into_response()
}

/// What `POST /webhooks/shopify` answers, for the OpenAPI description.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the JSON `shopify_webhook` builds")]
pub struct WebhookOutcome {
    /// `accepted` (its commands are queued) or `ignored` (a topic or payload Stockroom does not act on; retrying
    /// would not help), with the `reason` and `message`.
    #[schema(pattern = "^(accepted|ignored)$")]
    outcome: String,
    /// Commands queued.
    commands: Option<u64>,
    reason: Option<String>,
    message: Option<String>,
}

/// A Shopify webhook (`orders/create`, `orders/cancelled`, `orders/fulfilled`, `refunds/create`,
/// `inventory_levels/update`): verified, turned into commands, queued. 200 within milliseconds.
#[utoipa::path(post, path = "/webhooks/shopify", tag = "webhooks",
    params(
        ("X-Shopify-Hmac-Sha256" = String, Header, description = "Base64 HMAC-SHA256 of the raw body with the shop's secret (any of `STOCKROOM_SHOPIFY_SECRETS`)"),
        ("X-Shopify-Topic" = String, Header, pattern = "\\S", description = "e.g. `orders/create`; a topic Stockroom does not act on is acknowledged as ignored"),
        ("X-Shopify-Webhook-Id" = String, Header, pattern = "^[!-~]{1,128}$", description = "What makes a redelivery a duplicate (or `Shopify-Event-Id`)"),
        ("X-Shopify-Shop-Domain" = Option<String>, Header),
        ("X-Shopify-Triggered-At" = Option<String>, Header)),
    request_body(content = serde_json::Value,
        description = "The webhook's payload as Shopify sends it (a JSON object); only the fields Stockroom needs are read, and a payload it cannot use is acknowledged as ignored"),
    responses((status = 200, body = WebhookOutcome, description = "accepted (commands queued), or ignored with the reason"),
              (status = 400, response = inline(BadRequest)),
              (status = 401, body = ErrorBody, description = "bad or missing signature (`unauthorized`, with the `reason`): nothing applied"),
              (status = 413, response = inline(TooLarge)),
              (status = 503, response = inline(Unavailable))))]
async fn shopify_webhook(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signature = shopify::shopify_header(get, shopify::HMAC_HEADER);
    if let Err(e) = shopify::verify_hmac(&state.secrets, &body, signature.as_deref()) {
        tracing::info!(reason = e.code(), "shopify webhook refused: signature");
        return Ok(unauthorized(e.code()));
    }
    let webhook = shopify::WebhookHeaders::from_lookup(get)
        .map_err(|e| ApiError::bad_request("missing_shopify_header", e.to_string()))?;

    // The one lookup a webhook needs (inventory levels name Shopify's ids): done before the pure part.
    let mapped = match shopify::Topic::parse(&webhook.topic) {
        Some(shopify::Topic::InventoryLevelsUpdate) => inventory_mapping(&state, &body).await?,
        _ => None,
    };
    let mapping = |item: u64, location: u64| match &mapped {
        Some((i, l, sku, loc)) if *i == item && *l == location => Some((sku.clone(), loc.clone())),
        _ => None,
    };
    let commands = match shopify::commands(&webhook, &body, &mapping, &state.default_location) {
        Ok(commands) => commands,
        Err(shopify::WebhookError::Encode { message }) => {
            tracing::error!(message, "could not encode a command");
            return Err(ApiError::new(Fault::Internal, "internal", "could not encode a command"));
        }
        // Retrying would not help, and Shopify must not retry forever: acknowledge, and say why.
        Err(e) => {
            tracing::warn!(topic = %webhook.topic, webhook = %webhook.webhook_id, reason = e.code(), error = %e, "shopify webhook ignored");
            return Ok(ok(
                StatusCode::OK,
                &json!({ "outcome": "ignored", "reason": e.code(), "message": e.to_string() }),
            ));
        }
    };
    // A command stock-updates would refuse (a quantity past the ledger's range, an order name longer than a
    // reference may be, more lines than a hold takes) must not be acknowledged as accepted and then lost on the
    // queue: each is checked with the decoder stock-updates applies it with, and such a webhook is ignored, saying
    // why, as a payload Stockroom cannot use is.
    if let Some((reason, message)) = commands.iter().find_map(refusal) {
        tracing::warn!(topic = %webhook.topic, webhook = %webhook.webhook_id, reason, message, "shopify webhook ignored");
        return Ok(ok(StatusCode::OK, &json!({ "outcome": "ignored", "reason": reason, "message": message })));
    }
    let queued: Vec<QueuedCommand> = commands
        .into_iter()
        .map(|c| QueuedCommand {
            id: c.id,
            ty: c.ty.to_owned(),
            source: SOURCE.to_owned(),
            ordering_key: c.ordering_key,
            data: c.data,
            attempts: 0,
        })
        .collect();
    let count = queued.len();
    state.services.commands.publish(queued).await?;
    Ok(ok(StatusCode::OK, &json!({ "outcome": "accepted", "commands": count })))
}

/// Why stock-updates would refuse `command`, if it would: its error code and message.
fn refusal(command: &shopify::OutgoingCommand) -> Option<(&'static str, String)> {
    let envelope = stockroom_runtime::events::Envelope {
        ty: command.ty.to_owned(),
        source: SOURCE.to_owned(),
        id: command.id.clone(),
        data: command.data.clone(),
    };
    match stockroom_stock_updates::commands::decode(&envelope) {
        Ok(_) => None,
        Err(ApiError::Client { code, message, .. }) => Some((code, message)),
        // Decoding reads no store; any other error would be a bug, and the command's own delivery reports it.
        Err(_) => None,
    }
}

/// The Shopify ids an `inventory_levels/update` names, and what they map to.
async fn inventory_mapping(state: &WebhookState, body: &[u8]) -> Result<Option<(u64, u64, String, String)>, ApiError> {
    #[derive(Deserialize)]
    struct Ids {
        inventory_item_id: shopify::ShopifyId,
        location_id: shopify::ShopifyId,
    }
    let Ok(ids) = serde_json::from_slice::<Ids>(body) else {
        return Ok(None); // the pure part reports the bad payload
    };
    let (item, location) = (ids.inventory_item_id.0, ids.location_id.0);
    match state.services.external_ids().shopify_mapping(&item.to_string(), &location.to_string()).await? {
        (Some(sku), Some(loc)) => Ok(Some((item, location, sku.to_string(), loc.to_string()))),
        _ => Ok(None),
    }
}

fn shopify_id(raw: &str) -> Result<String, ApiError> {
    shopify::ShopifyId::parse(raw)
        .map(|id| id.0.to_string())
        .ok_or_else(|| ApiError::invalid("invalid_shopify_id", "a Shopify id is its decimal digits or its gid"))
}

/// A Shopify id in a path: its decimal digits (up to 2^64 - 1), or its `gid://shopify/Type/digits`.
const SHOPIFY_ID: &str =
    "decimal digits (ids exceed 2^53, so they are strings), or the gid `gid://shopify/Type/digits`";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ShopifyItemBody)]
pub struct ItemBody {
    #[schema(value_type = Sku)]
    pub sku: String,
}

/// What `PUT /v1/shopify/items/{inventory_item_id}` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ItemMapping {
    /// The id's decimal digits.
    inventory_item_id: String,
    sku: Sku,
}

/// Map a Shopify inventory item to a sku.
#[utoipa::path(put, path = "/v1/shopify/items/{inventory_item_id}", tag = "webhooks", operation_id = "put_shopify_item",
    request_body = ItemBody,
    params(("inventory_item_id" = String, Path, pattern = "^(0*[0-9]{1,19}|gid://shopify/[^/?]+/0*[0-9]{1,19}([?].*)?)$", description = SHOPIFY_ID)),
    responses((status = 200, body = ItemMapping, description = "mapped"), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 413, response = inline(TooLarge)), (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "`invalid_shopify_id`, `invalid_sku` or `invalid_request`"),
              (status = 503, response = inline(Unavailable))))]
async fn put_item(
    State(state): State<WebhookState>,
    Path(id): Path<String>,
    body: JsonBody<ItemBody>,
) -> Result<Response, ApiError> {
    let id = shopify_id(&id)?;
    let sku = fields::sku(&body.value.sku)?;
    state.services.external_ids().put_shopify_item(id.clone(), sku.clone()).await?;
    Ok(ok(StatusCode::OK, &ItemMapping { inventory_item_id: id, sku }))
}

/// Named apart from stock-updates' `LocationBody` (`{name, priority}`): the suite's document holds one schema per
/// name, and the first one merged would stand for both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ShopifyLocationBody)]
pub struct LocationBody {
    /// The Stockroom location Shopify's location is.
    #[schema(value_type = Location)]
    pub location: String,
}

/// What `PUT /v1/shopify/locations/{location_id}` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LocationMapping {
    /// The id's decimal digits.
    location_id: String,
    location: Location,
}

/// Map a Shopify location to a Stockroom location.
#[utoipa::path(put, path = "/v1/shopify/locations/{location_id}", tag = "webhooks", operation_id = "put_shopify_location",
    request_body = LocationBody,
    params(("location_id" = String, Path, pattern = "^(0*[0-9]{1,19}|gid://shopify/[^/?]+/0*[0-9]{1,19}([?].*)?)$", description = SHOPIFY_ID)),
    responses((status = 200, body = LocationMapping, description = "mapped"), (status = 400, response = inline(BadRequest)),
              (status = 401, response = inline(Unauthenticated)),
              (status = 413, response = inline(TooLarge)), (status = 415, response = inline(UnsupportedMedia)),
              (status = 422, body = ErrorBody, description = "`invalid_shopify_id`, `invalid_location` or `invalid_request`"),
              (status = 503, response = inline(Unavailable))))]
async fn put_location(
    State(state): State<WebhookState>,
    Path(id): Path<String>,
    body: JsonBody<LocationBody>,
) -> Result<Response, ApiError> {
    let id = shopify_id(&id)?;
    let location = fields::location(&body.value.location)?;
    state.services.external_ids().put_shopify_location(id.clone(), location.clone()).await?;
    Ok(ok(StatusCode::OK, &LocationMapping { location_id: id, location }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_secrets_never_reach_debug_output() {
        let settings = super::WebhookSettings {
            shopify_secrets: "shpss_hush_one,shpss_hush_two".into(),
            shopify_default_location: String::new(),
        };
        assert!(!format!("{settings:?}").contains("hush"), "{settings:?}");
    }
}
