//! Shopify webhooks: the signature, the headers, the payloads and the Stockroom commands they become.
//!
//! Pure, no I/O. The route verifies the signature over the raw body ([`verify_hmac`]), reads the headers
//! ([`WebhookHeaders`]), dedups on [`WebhookHeaders::webhook_id`] and publishes what [`commands`] returns,
//! answering at once: nothing here applies a command.
//!
//! Data protection: the payload structs below name only what inventory needs. A customer's name, email,
//! phone, addresses, notes and the rest are skipped by serde without ever being deserialised into anything,
//! so they cannot reach a command, a log line or an error message.
//!
//! Shopify ids are integers that can exceed 2^53. They are read as `u64` (exact: serde_json never takes an
//! integer through `f64`), accepted as strings too, and carried in commands as decimal strings.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use hmac::{Hmac, Mac};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::Sha256;
use stockroom_events::command::{self, Adjust, Change, Hold, Line, ReservationRef, SetFromExternal};
use subtle::{Choice, ConstantTimeEq};

/// The environment variable holding the comma-separated webhook secrets (several during a rotation).
pub const SECRETS_ENV: &str = "STOCKROOM_SHOPIFY_SECRETS";

/// Header names, lowercase (as `http::HeaderName` spells them); matching ignores case. Shopify's event
/// deliveries (the "events" header family of shopify-app-js) send the same names without `x-`
/// (`shopify-hmac-sha256`, ...): [`shopify_header`] takes either.
pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
pub const TOPIC_HEADER: &str = "x-shopify-topic";
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";
pub const SHOP_DOMAIN_HEADER: &str = "x-shopify-shop-domain";
pub const TRIGGERED_AT_HEADER: &str = "x-shopify-triggered-at";
/// The events family's id of the event: the dedup key when a delivery carries no webhook id.
pub const EVENT_ID_HEADER: &str = "shopify-event-id";

/// Header `name` (one of the `x-shopify-…` names above) from `get`, or its twin without `x-`.
pub fn shopify_header(get: impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).or_else(|| name.strip_prefix("x-").and_then(&get))
}

/// The reason on a restock's adjustment.
pub const RESTOCK_REASON: &str = "shopify_restock";
/// The `system` of a `set-from-external` command.
pub const SYSTEM: &str = "shopify";

// ---------------------------------------------------------------------------------------------------------
// Signature

/// Standard base64 as Shopify sends it; padding is accepted whether present or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The webhook secrets, from [`SECRETS_ENV`]. `Debug` prints how many there are, never what they are.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    /// Comma-separated secrets; each is trimmed, empty ones are skipped.
    pub fn parse(raw: &str) -> Self {
        Self(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()).collect())
    }

    /// From [`SECRETS_ENV`]; unset (or not UTF-8) gives no secret, so every signature is refused.
    pub fn from_env() -> Self {
        Self::parse(&std::env::var(SECRETS_ENV).unwrap_or_default())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Why a signature was refused. Every variant is a 401 for the route, with nothing applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HmacError {
    #[error("no X-Shopify-Hmac-Sha256 header")]
    Missing,
    #[error("X-Shopify-Hmac-Sha256 is not the base64 of a SHA-256 HMAC")]
    Malformed,
    #[error("X-Shopify-Hmac-Sha256 does not match the body under any configured secret")]
    Mismatch,
    /// A configuration error (log it as one), but still a refusal.
    #[error("no Shopify webhook secret is configured ({SECRETS_ENV})")]
    NoSecrets,
}

impl HmacError {
    /// The snake_case code for an error body.
    pub fn code(&self) -> &'static str {
        match self {
            HmacError::Missing => "missing_signature",
            HmacError::Malformed | HmacError::Mismatch => "invalid_signature",
            HmacError::NoSecrets => "no_webhook_secret",
        }
    }
}

/// Checks `header` (the value of `X-Shopify-Hmac-Sha256`): base64 of HMAC-SHA256(secret, raw body).
///
/// Accepted if any secret matches. Every secret is tried, each comparison is constant-time and the results
/// are combined without branching, so neither the timing nor the answer tells which secret matched.
pub fn verify_hmac(secrets: &Secrets, raw_body: &[u8], header: Option<&str>) -> Result<(), HmacError> {
    if secrets.is_empty() {
        return Err(HmacError::NoSecrets);
    }
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(HmacError::Missing)?;
    let given = BASE64.decode(header).map_err(|_| HmacError::Malformed)?;
    if given.len() != TAG_LEN {
        return Err(HmacError::Malformed);
    }
    let mut matched = Choice::from(0);
    for secret in &secrets.0 {
        // HMAC takes a key of any length, so this never fails; a failure would simply not match.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else { continue };
        mac.update(raw_body);
        matched |= mac.finalize().into_bytes().as_slice().ct_eq(&given);
    }
    if bool::from(matched) { Ok(()) } else { Err(HmacError::Mismatch) }
}

// ---------------------------------------------------------------------------------------------------------
// Headers

/// The headers Shopify sends with every webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// `X-Shopify-Topic`, e.g. `orders/create`.
    pub topic: String,
    /// `X-Shopify-Webhook-Id`: the same on every retry of one delivery; the dedup key.
    pub webhook_id: String,
    /// `X-Shopify-Shop-Domain`, e.g. `example.myshopify.com`.
    pub shop_domain: Option<String>,
    /// `X-Shopify-Triggered-At`, as Shopify wrote it.
    pub triggered_at: Option<String>,
}

/// A header that is missing or unusable: a 400 for the route (after the signature has been checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header {header} is missing")]
    Missing { header: &'static str },
    #[error("header {header} is not valid")]
    Invalid { header: &'static str },
}

/// The longest webhook id accepted (Shopify's are UUIDs).
const MAX_WEBHOOK_ID_LEN: usize = 128;

impl WebhookHeaders {
    /// From header pairs, names compared case-insensitively; the first of repeated headers wins.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Result<Self, HeaderError> {
        Self::from_lookup(|name| header(pairs, name).map(str::to_owned))
    }

    /// From a lookup asked for the lowercase names above; it must ignore case, as `http::HeaderMap::get` does.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, HeaderError> {
        let value = |name: &str| shopify_header(&get, name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let topic = value(TOPIC_HEADER).ok_or(HeaderError::Missing { header: TOPIC_HEADER })?;
        let webhook_id = value(WEBHOOK_ID_HEADER)
            .or_else(|| value(EVENT_ID_HEADER))
            .ok_or(HeaderError::Missing { header: WEBHOOK_ID_HEADER })?;
        // It becomes part of every command id: keep it short and printable.
        if webhook_id.len() > MAX_WEBHOOK_ID_LEN || !webhook_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeaderError::Invalid { header: WEBHOOK_ID_HEADER });
        }
        Ok(Self { topic, webhook_id, shop_domain: value(SHOP_DOMAIN_HEADER), triggered_at: value(TRIGGERED_AT_HEADER) })
    }
}

/// The value of header `name` among `pairs`, the name compared case-insensitively; the first one wins.
pub fn header<'a, K: AsRef<str>, V: AsRef<str>>(pairs: &'a [(K, V)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
}

// ---------------------------------------------------------------------------------------------------------
// Topics

/// The topics Stockroom subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    OrdersCreate,
    OrdersCancelled,
    OrdersFulfilled,
    RefundsCreate,
    InventoryLevelsUpdate,
}

impl Topic {
    pub const ALL: &[Topic] = &[
        Topic::OrdersCreate,
        Topic::OrdersCancelled,
        Topic::OrdersFulfilled,
        Topic::RefundsCreate,
        Topic::InventoryLevelsUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::OrdersCreate => "orders/create",
            Topic::OrdersCancelled => "orders/cancelled",
            Topic::OrdersFulfilled => "orders/fulfilled",
            Topic::RefundsCreate => "refunds/create",
            Topic::InventoryLevelsUpdate => "inventory_levels/update",
        }
    }

    /// `None` for a topic Stockroom does not handle.
    pub fn parse(raw: &str) -> Option<Topic> {
        let raw = raw.trim();
        Topic::ALL.iter().copied().find(|t| t.as_str().eq_ignore_ascii_case(raw))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Ids

/// A Shopify id: a JSON number (exact up to `u64::MAX`), a string of digits, or a `gid://shopify/Type/123`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShopifyId(pub u64);

impl ShopifyId {
    /// `123` or `gid://shopify/Order/123`; nothing else (no sign, no spaces, no fraction).
    pub fn parse(raw: &str) -> Option<ShopifyId> {
        let digits = match raw.strip_prefix("gid://shopify/") {
            Some(rest) => {
                let path = rest.split_once('?').map_or(rest, |(path, _)| path);
                let (kind, id) = path.split_once('/')?;
                if kind.is_empty() {
                    return None;
                }
                id
            }
            None => raw,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(ShopifyId)
    }
}

impl fmt::Display for ShopifyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ShopifyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = ShopifyId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Shopify id: a non-negative integer, or its digits as a string")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ShopifyId, E> {
                Ok(ShopifyId(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ShopifyId, E> {
                u64::try_from(v).map(ShopifyId).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            // A float id has already lost its exactness: refuse it rather than guess.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ShopifyId, E> {
                Err(E::invalid_type(de::Unexpected::Float(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShopifyId, E> {
                ShopifyId::parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Other("string"), &self))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Payloads: only what inventory needs; serde skips every other field unread.

/// `null` as the type's default (Shopify sends `null` for empty lists and absent values alike).
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `orders/create`, `orders/cancelled`, `orders/fulfilled`: the order.
#[derive(Deserialize)]
struct Order {
    id: ShopifyId,
    /// The shop-facing order number, e.g. `#1001`.
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    line_items: Vec<OrderLine>,
}

#[derive(Deserialize)]
struct OrderLine {
    #[serde(default)]
    sku: Option<String>,
    quantity: i64,
}

/// `refunds/create`: the refund.
#[derive(Deserialize)]
struct Refund {
    id: ShopifyId,
    /// Older payloads: whether the whole refund restocked (before `restock_type` existed).
    #[serde(default)]
    restock: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    refund_line_items: Vec<RefundLine>,
}

#[derive(Deserialize)]
struct RefundLine {
    quantity: i64,
    /// `no_restock`, `cancel`, `return` or `legacy_restock`.
    #[serde(default)]
    restock_type: Option<String>,
    #[serde(default)]
    location_id: Option<ShopifyId>,
    #[serde(default)]
    line_item: Option<RefundedItem>,
}

#[derive(Deserialize)]
struct RefundedItem {
    #[serde(default)]
    sku: Option<String>,
    /// Not in Shopify's REST line item today; used when present.
    #[serde(default)]
    inventory_item_id: Option<ShopifyId>,
}

/// `inventory_levels/update`.
#[derive(Deserialize)]
struct InventoryLevel {
    inventory_item_id: ShopifyId,
    location_id: ShopifyId,
    /// `null` when the item is not stocked at the location.
    #[serde(default)]
    available: Option<i64>,
    updated_at: String,
}

// ---------------------------------------------------------------------------------------------------------
// Commands

/// A command to publish on the command bus, as a CloudEvent of type `ty` with `id` and `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutgoingCommand {
    /// One of [`stockroom_events::command`]'s constants.
    pub ty: &'static str,
    /// `shopify:<webhook id>:<n>`: the same for every delivery of one webhook, so it dedups downstream too.
    pub id: String,
    /// The sku, or the reservation id.
    pub ordering_key: String,
    pub data: Value,
}

/// Why a webhook gives no commands. The route answers 200 to each (and logs it): a retry would not help,
/// and Shopify must not retry forever. Only [`WebhookError::Encode`] is a bug worth a 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("unsupported Shopify topic {topic:?}")]
    UnsupportedTopic { topic: String },
    #[error("the {topic} payload is not what Shopify sends: {message}")]
    BadPayload { topic: &'static str, message: String },
    #[error("no sku and location are mapped to Shopify inventory item {inventory_item_id} at location {location_id}")]
    Unmapped { inventory_item_id: String, location_id: String },
    #[error("refund {refund_id} restocks {sku} at no mapped location, and no default location is set")]
    NoLocation { refund_id: String, sku: String },
    #[error("could not encode a command: {message}")]
    Encode { message: String },
}

impl WebhookError {
    /// The snake_case code for a log line or an error body.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::UnsupportedTopic { .. } => "unsupported_topic",
            WebhookError::BadPayload { .. } => "invalid_payload",
            WebhookError::Unmapped { .. } => "unmapped_inventory_item",
            WebhookError::NoLocation { .. } => "no_restock_location",
            WebhookError::Encode { .. } => "internal",
        }
    }
}

/// The commands one webhook becomes. `mapping` turns a Shopify (inventory item id, location id) into a
/// Stockroom (sku, location); `default_location` is where a restock goes when no mapping places it (empty
/// for none).
///
/// - `orders/create`: one `sell` of reservation `shopify-order-<id>`, its lines the line items with a sku
///   and a positive quantity (one line per sku, quantities summed), without location (sourced by priority).
/// - `orders/cancelled`, `orders/fulfilled`: `release`, `fulfil` of that reservation.
///   An order with no line Stockroom can track gives no command on any of the three.
/// - `refunds/create`: one `adjust` (`+quantity`, reason `shopify_restock`) per sku and location restocked
///   (`restock_type` `return` or `legacy_restock`, or, without a type, the refund's `restock`; `cancel` lines come
///   back through the order's release instead).
/// - `inventory_levels/update`: one `set-from-external` of the mapped sku and location; `available: null`
///   gives none.
pub fn commands(
    headers: &WebhookHeaders,
    body: &[u8],
    mapping: &dyn Fn(u64, u64) -> Option<(String, String)>,
    default_location: &str,
) -> Result<Vec<OutgoingCommand>, WebhookError> {
    let topic = Topic::parse(&headers.topic)
        .ok_or_else(|| WebhookError::UnsupportedTopic { topic: headers.topic.chars().take(64).collect() })?;
    let mut out = Commands { webhook_id: &headers.webhook_id, list: Vec::new() };
    match topic {
        Topic::OrdersCreate => {
            let order: Order = parse(topic, body)?;
            let lines = sell_lines(topic, &order)?;
            if !lines.is_empty() {
                let reservation_id = reservation_id(&order);
                let name = order.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
                let reference = order_reference(name.map_or_else(|| order.id.to_string(), str::to_owned));
                let lines = lines.into_iter().map(|(sku, quantity)| Line { sku, quantity, location: None }).collect();
                let hold = Hold {
                    reservation_id: reservation_id.clone(),
                    lines,
                    ttl_seconds: None,
                    reference: Some(reference),
                };
                out.push(command::SELL, reservation_id, &hold)?;
            }
        }
        Topic::OrdersCancelled | Topic::OrdersFulfilled => {
            let order: Order = parse(topic, body)?;
            if !sell_lines(topic, &order)?.is_empty() {
                let ty = if topic == Topic::OrdersCancelled { command::RELEASE } else { command::FULFIL };
                let reservation_id = reservation_id(&order);
                out.push(ty, reservation_id.clone(), &ReservationRef { reservation_id })?;
            }
        }
        Topic::RefundsCreate => {
            let refund: Refund = parse(topic, body)?;
            for (sku, location, delta) in restocks(topic, &refund, mapping, default_location)? {
                let change = Change {
                    sku: sku.clone(),
                    location,
                    delta: Some(delta),
                    set: None,
                    reason: RESTOCK_REASON.to_owned(),
                    reference: Some(format!("shopify-refund:{}", refund.id)),
                    expected_on_hand: None,
                };
                out.push(command::ADJUST, sku, &Adjust { changes: vec![change] })?;
            }
        }
        Topic::InventoryLevelsUpdate => {
            let level: InventoryLevel = parse(topic, body)?;
            let observed_at = utc_rfc3339(&level.updated_at).ok_or_else(|| WebhookError::BadPayload {
                topic: topic.as_str(),
                message: "updated_at is not an RFC 3339 time".to_owned(),
            })?;
            if let Some(available) = level.available {
                let (item, at) = (level.inventory_item_id, level.location_id);
                let (sku, location) = mapping(item.0, at.0).ok_or_else(|| WebhookError::Unmapped {
                    inventory_item_id: item.to_string(),
                    location_id: at.to_string(),
                })?;
                let set = SetFromExternal {
                    sku: sku.clone(),
                    location,
                    on_hand: available,
                    system: SYSTEM.to_owned(),
                    observed_at,
                    reference: Some(format!("shopify-inventory-item:{item}@{at}")),
                };
                out.push(command::SET_FROM_EXTERNAL, sku, &set)?;
            }
        }
    }
    Ok(out.list)
}

/// Numbers the commands of one webhook.
struct Commands<'a> {
    webhook_id: &'a str,
    list: Vec<OutgoingCommand>,
}

impl Commands<'_> {
    fn push<T: Serialize>(&mut self, ty: &'static str, ordering_key: String, data: &T) -> Result<(), WebhookError> {
        // Plain structs of strings and integers always serialise; the error is passed on rather than unwrapped.
        let data = serde_json::to_value(data).map_err(|e| WebhookError::Encode { message: e.to_string() })?;
        let id = format!("shopify:{}:{}", self.webhook_id, self.list.len());
        self.list.push(OutgoingCommand { ty, id, ordering_key, data });
        Ok(())
    }
}

fn parse<'a, T: Deserialize<'a>>(topic: Topic, body: &'a [u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload { topic: topic.as_str(), message: e.to_string() })
}

/// `shopify:<order name>`, cut at a character boundary to what a reference may be: the name is a label, and an
/// unusually long one must not cost the sale.
fn order_reference(name: String) -> String {
    let mut reference = format!("shopify:{name}");
    let mut end = reference.len().min(stockroom_runtime::fields::TEXT_BYTES_MAX);
    while !reference.is_char_boundary(end) {
        end -= 1;
    }
    reference.truncate(end);
    reference
}

fn reservation_id(order: &Order) -> String {
    format!("shopify-order-{}", order.id)
}

/// The order's lines Stockroom tracks, one per sku in first-seen order, quantities summed. Lines without a
/// sku (custom items, tips, gift cards) or with a sku outside Stockroom's alphabet are not Stockroom's stock.
fn sell_lines(topic: Topic, order: &Order) -> Result<Vec<(String, i64)>, WebhookError> {
    let mut lines: Vec<(String, i64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for line in &order.line_items {
        let Some(sku) = line.sku.as_deref().map(str::trim).filter(|s| is_sku(s)) else { continue };
        if line.quantity <= 0 {
            continue;
        }
        match index.get(sku) {
            Some(&i) => {
                lines[i].1 = lines[i].1.checked_add(line.quantity).ok_or_else(|| too_many(topic, sku))?;
            }
            None => {
                index.insert(sku.to_owned(), lines.len());
                lines.push((sku.to_owned(), line.quantity));
            }
        }
    }
    Ok(lines)
}

/// The refund's restocks as (sku, location, units), one per sku and location in first-seen order.
fn restocks(
    topic: Topic,
    refund: &Refund,
    mapping: &dyn Fn(u64, u64) -> Option<(String, String)>,
    default_location: &str,
) -> Result<Vec<(String, String, i64)>, WebhookError> {
    let mut out: Vec<(String, String, i64)> = Vec::new();
    for line in &refund.refund_line_items {
        // `cancel` lines are units that never shipped: they come back when `orders/cancelled` releases the
        // order's reservation, so restocking them here too would count them twice. Only goods that left
        // and came back (`return`, `legacy_restock`) are received again.
        let restocked = match line.restock_type.as_deref() {
            Some(kind) => matches!(kind, "return" | "legacy_restock"),
            None => refund.restock == Some(true),
        };
        if !restocked || line.quantity <= 0 {
            continue;
        }
        let item = line.line_item.as_ref();
        let mapped = match (item.and_then(|i| i.inventory_item_id), line.location_id) {
            (Some(item), Some(at)) => mapping(item.0, at.0),
            _ => None,
        };
        let own_sku = item.and_then(|i| i.sku.as_deref()).map(str::trim).filter(|s| is_sku(s));
        let Some(sku) = own_sku.or(mapped.as_ref().map(|(sku, _)| sku.as_str())).map(str::to_owned) else {
            continue;
        };
        let location = match mapped {
            Some((_, location)) => location,
            None if !default_location.is_empty() => default_location.to_owned(),
            None => return Err(WebhookError::NoLocation { refund_id: refund.id.to_string(), sku }),
        };
        match out.iter_mut().find(|(s, l, _)| *s == sku && *l == location) {
            Some(row) => row.2 = row.2.checked_add(line.quantity).ok_or_else(|| too_many(topic, &sku))?,
            None => out.push((sku, location, line.quantity)),
        }
    }
    Ok(out)
}

fn too_many(topic: Topic, sku: &str) -> WebhookError {
    WebhookError::BadPayload { topic: topic.as_str(), message: format!("the quantities of {sku} overflow") }
}

/// Stockroom's sku: 1–128 characters of `A-Z a-z 0-9 . _ - : /`.
fn is_sku(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

// ---------------------------------------------------------------------------------------------------------
// Times

/// An RFC 3339 time with any offset (Shopify writes the shop's, e.g. `2024-10-08T10:36:27-04:00`) as the
/// same instant in UTC (`2024-10-08T14:36:27Z`), fraction kept; `None` if it is not RFC 3339.
fn utc_rfc3339(raw: &str) -> Option<String> {
    let s = raw.trim();
    // chrono also takes U+2212 as an offset's minus sign; RFC 3339 is ASCII only.
    if !s.is_ascii() {
        return None;
    }
    let utc = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    // chrono reads second 60 as a leap second (nanoseconds past 10^9), which observed_at has always refused;
    // and an offset can carry year 0000 or 9999 past the four digits RFC 3339 allows.
    if utc.nanosecond() >= 1_000_000_000 || !(0..=9999).contains(&utc.year()) {
        return None;
    }
    // The fraction is copied as written rather than printed from chrono's nanoseconds, which would pad `.1`
    // to `.100`, drop `.000` and cut digits past the ninth. It starts at byte 19 in any time chrono accepted.
    let fraction = match s.get(19..) {
        Some(rest) if rest.starts_with('.') => &rest[..=rest[1..].bytes().take_while(u8::is_ascii_digit).count()],
        _ => "",
    };
    Some(format!("{}{fraction}Z", utc.format("%Y-%m-%dT%H:%M:%S")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_trimmed_and_empty_ones_skipped() {
        let secrets = Secrets::parse(" new , old ,, ");
        assert_eq!(secrets.0, vec![b"new".to_vec(), b"old".to_vec()]);
        assert!(Secrets::parse(" , ").is_empty());
    }

    #[test]
    fn secrets_debug_prints_how_many_but_not_what() {
        let shown = format!("{:?}", Secrets::parse("hush-hush-1,hush-hush-2"));
        assert_eq!(shown, "Secrets(2 redacted)");
        assert!(!shown.contains("hush"));
    }

    #[test]
    fn an_order_reference_is_cut_to_a_reference_at_a_character_boundary() {
        let max = stockroom_runtime::fields::TEXT_BYTES_MAX;
        assert_eq!(order_reference("#1001".into()), "shopify:#1001");
        let long = order_reference("é".repeat(max));
        assert!(long.len() <= max && long.len() > max - 2, "{}", long.len());
        assert!(long.starts_with("shopify:é"));
        assert_eq!(order_reference("x".repeat(max)).len(), max);
    }

    #[test]
    fn shopify_ids_are_read_from_numbers_digit_strings_and_gids() {
        let id = |json: &str| serde_json::from_str::<ShopifyId>(json).ok();
        assert_eq!(id("18446744073709551615"), Some(ShopifyId(u64::MAX)));
        assert_eq!(id("\"9007199254740993\""), Some(ShopifyId(9_007_199_254_740_993)));
        assert_eq!(id("\"gid://shopify/Order/820982911946154508\""), Some(ShopifyId(820_982_911_946_154_508)));
        assert_eq!(id("\"gid://shopify/InventoryLevel/24826418?inventory_item_id=1\""), Some(ShopifyId(24_826_418)));
    }

    #[test]
    fn shopify_ids_refuse_floats_negatives_and_non_digits() {
        for bad in ["9.007199254740993e15", "1.0", "-1", "\"\"", "\"12a\"", "\"-1\"", "\" 1\"", "18446744073709551616"]
        {
            assert!(serde_json::from_str::<ShopifyId>(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(ShopifyId::parse("gid://shopify//1"), None);
    }

    #[test]
    fn times_with_an_offset_become_the_same_instant_in_utc() {
        assert_eq!(utc_rfc3339("2024-10-08T10:36:27-04:00").as_deref(), Some("2024-10-08T14:36:27Z"));
        assert_eq!(utc_rfc3339("2024-01-01T01:00:00.123+02:00").as_deref(), Some("2023-12-31T23:00:00.123Z"));
        assert_eq!(utc_rfc3339("2024-02-28T23:30:00-01:00").as_deref(), Some("2024-02-29T00:30:00Z"));
        assert_eq!(utc_rfc3339("2024-10-08T14:36:27Z").as_deref(), Some("2024-10-08T14:36:27Z"));
    }

    #[test]
    fn fraction_digits_are_kept_as_written() {
        assert_eq!(utc_rfc3339("2024-10-08T10:36:27.1-04:00").as_deref(), Some("2024-10-08T14:36:27.1Z"));
        assert_eq!(utc_rfc3339("2024-10-08T14:36:27.000Z").as_deref(), Some("2024-10-08T14:36:27.000Z"));
        assert_eq!(
            utc_rfc3339(" 2024-10-08t14:36:27.123456789012z ").as_deref(),
            Some("2024-10-08T14:36:27.123456789012Z")
        );
    }

    #[test]
    fn times_that_are_not_rfc_3339_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-10-08",
            "2024-10-08T14:36:27",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-10-08T24:00:00Z",
            "2024-10-08T14:36:27.Z",
            "2024-10-08T14:36:27+0400",
            "2024-10-08T14:36:27Zjunk",
            "2024-10-08T23:59:60Z",
            "2024-10-08T14:36:27\u{2212}04:00",
            "2024-10-08T14:36:27+24:00",
            "0000-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
        ] {
            assert_eq!(utc_rfc3339(bad), None, "{bad:?} should be refused");
        }
    }

    #[test]
    fn skus_follow_stockroom_alphabet() {
        assert!(is_sku("IPOD2008PINK"));
        assert!(is_sku("a.b_c-d:e/f"));
        for bad in ["", "has space", "é", &"x".repeat(129)] {
            assert!(!is_sku(bad), "{bad:?}");
        }
    }

    #[test]
    fn topics_are_recognised_and_others_are_not() {
        for topic in Topic::ALL {
            assert_eq!(Topic::parse(topic.as_str()), Some(*topic));
        }
        assert_eq!(Topic::parse("products/update"), None);
    }
}
