//! `POST /webhooks/shopify`: the signature, the `X-Shopify-*` / `shopify-*` headers, the payloads and the commands
//! they become, in the order the route (`functions/webhooks/src/lib.rs`) takes them.
//!
//! Input: an HTTP request, `head CRLF CRLF body` (see `stockroom_fuzz::request`). The webhook secrets are
//! [`CURRENT`] and [`OLD`]. Checked besides "no panic":
//! - the request as sent is accepted only if its signature really is the HMAC of its body under a configured
//!   secret (checked here with `hmac` directly); a good tag with one bit flipped, or under an unknown secret, never is;
//! - the request signed afresh (so that the fuzzer gets past the signature) is accepted, and then: a webhook id is
//!   short and printable; every command has a known type, the id `shopify:<webhook id>:<n>`, data of its type's shape
//!   with positive quantities and Stockroom skus; and when stock-updates, which applies them, cannot decode one, its
//!   refusal is a 4xx (each kind of refusal is printed once: see the note at the end).

#![no_main]

use std::collections::BTreeSet;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use stockroom_events::command::{self, Adjust, Hold, ReservationRef, SetFromExternal};
use stockroom_fuzz::{fingerprint, request};
use stockroom_runtime::ApiError;
use stockroom_runtime::events::Envelope;
use stockroom_stock_updates::commands as stock_updates;
use stockroom_webhooks::shopify::{self, HMAC_HEADER, HmacError, OutgoingCommand, Secrets, WebhookHeaders};

const CURRENT: &str = "shpss_fuzz_current";
const OLD: &str = "shpss_fuzz_old";

fuzz_target!(|input: &[u8]| {
    let secrets = Secrets::parse(&format!("{CURRENT}, {OLD}"));
    let (mut headers, body) = request(input);
    let choice = fingerprint(input);

    // As sent.
    let signature = shopify::shopify_header(lookup(&headers), HMAC_HEADER);
    let verdict = shopify::verify_hmac(&secrets, body, signature.as_deref());
    let genuine = |tag: Vec<u8>| tag == hmac(CURRENT, body) || tag == hmac(OLD, body);
    if verdict.is_ok() {
        assert!(signature.as_deref().and_then(decoded_tag).is_some_and(genuine), "accepted: {signature:?}");
    }

    // Forged: a bit of a good tag flipped, or a secret that is not configured.
    let mut tag = hmac(if choice & 1 == 0 { CURRENT } else { OLD }, body);
    tag[(choice >> 1) as usize % tag.len()] ^= 1 << ((choice >> 8) % 8);
    assert_eq!(shopify::verify_hmac(&secrets, body, Some(&STANDARD.encode(tag))), Err(HmacError::Mismatch));
    let stranger = hmac("shpss_fuzz_stranger", body);
    assert_eq!(shopify::verify_hmac(&secrets, body, Some(&STANDARD.encode(stranger))), Err(HmacError::Mismatch));

    // Signed afresh, padded or not, under the `x-` name or the events family's.
    let tag = hmac(if choice & 2 == 0 { CURRENT } else { OLD }, body);
    let encoded = if choice & 4 == 0 { STANDARD.encode(tag) } else { STANDARD_NO_PAD.encode(tag) };
    headers.remove(HMAC_HEADER);
    headers.remove("shopify-hmac-sha256");
    let name = if choice & 8 == 0 { HMAC_HEADER } else { "shopify-hmac-sha256" };
    headers.insert(name, HeaderValue::from_str(&encoded).expect("base64"));
    let signature = shopify::shopify_header(lookup(&headers), HMAC_HEADER);
    assert_eq!(shopify::verify_hmac(&secrets, body, signature.as_deref()), Ok(()));

    let Ok(webhook) = WebhookHeaders::from_lookup(lookup(&headers)) else { return };
    assert!(!webhook.topic.is_empty() && webhook.topic.trim() == webhook.topic);
    assert!(webhook.webhook_id.len() <= 128 && webhook.webhook_id.bytes().all(|b| b.is_ascii_graphic()));

    let default_location = if choice & 16 == 0 { "store-front" } else { "" };
    let Ok(list) = shopify::commands(&webhook, body, &mapping, default_location) else { return };
    for (n, c) in list.iter().enumerate() {
        check_command(&webhook, n, c);
    }
});

/// The route's header lookup: `HeaderMap::get` (first of repeated headers, names in any case), UTF-8 only.
fn lookup(headers: &HeaderMap) -> impl Fn(&str) -> Option<String> + '_ {
    |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn hmac(secret: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The tag a header carries: base64, standard alphabet, padded or not, blanks around it ignored.
fn decoded_tag(header: &str) -> Option<Vec<u8>> {
    let header = header.trim();
    let unpadded = header.strip_suffix("==").or_else(|| header.strip_suffix('=')).unwrap_or(header);
    STANDARD_NO_PAD.decode(unpadded).ok()
}

/// Shopify inventory item `i` at location `l` is `SKU-i` at `loc-l`, except items divisible by 3 (unmapped).
fn mapping(item: u64, location: u64) -> Option<(String, String)> {
    (!item.is_multiple_of(3)).then(|| (format!("SKU-{item}"), format!("loc-{location}")))
}

fn is_sku(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

/// The command's data as its type, which it must fit.
fn data<T: serde::de::DeserializeOwned>(c: &OutgoingCommand) -> T {
    serde_json::from_value(c.data.clone()).unwrap_or_else(|e| panic!("{e}: {c:?}"))
}

fn check_command(webhook: &WebhookHeaders, n: usize, c: &OutgoingCommand) {
    assert!(command::ALL.contains(&c.ty), "{c:?}");
    assert_eq!(c.id, format!("shopify:{}:{n}", webhook.webhook_id));
    match c.ty {
        command::SELL => {
            let hold: Hold = data(c);
            assert_eq!(hold.reservation_id, c.ordering_key);
            assert!(!hold.lines.is_empty());
            for (i, line) in hold.lines.iter().enumerate() {
                assert!(is_sku(&line.sku) && line.quantity > 0, "{c:?}");
                assert!(hold.lines[..i].iter().all(|other| other.sku != line.sku), "a sku twice: {c:?}");
            }
        }
        command::RELEASE | command::FULFIL => {
            let r: ReservationRef = data(c);
            assert_eq!(r.reservation_id, c.ordering_key);
        }
        command::ADJUST => {
            let adjust: Adjust = data(c);
            assert_eq!(adjust.changes.len(), 1);
            let change = &adjust.changes[0];
            assert!(change.delta.is_some_and(|d| d > 0) && change.set.is_none(), "{c:?}");
            assert_eq!(change.sku, c.ordering_key);
            assert!(!change.location.is_empty());
        }
        command::SET_FROM_EXTERNAL => {
            let set: SetFromExternal = data(c);
            assert_eq!(set.sku, c.ordering_key);
            let observed = chrono::DateTime::parse_from_rfc3339(&set.observed_at);
            assert!(
                set.observed_at.ends_with('Z') && observed.is_ok_and(|t| t.offset().local_minus_utc() == 0),
                "{c:?}"
            );
        }
        other => panic!("webhooks sends no {other}"),
    }
    let envelope = Envelope {
        ty: c.ty.to_owned(),
        source: stockroom_webhooks::SOURCE.to_owned(),
        id: c.id.clone(),
        data: c.data.clone(),
    };
    // A refusal here is a design question, not a crash: webhooks answered Shopify 200 and queued a command that
    // stock-updates will answer 422 (dead-lettered, not retried). Each kind is printed once, for the report.
    if let Err(e) = stock_updates::decode(&envelope) {
        assert!(e.status().is_client_error(), "{e:?}");
        let code = match &e {
            ApiError::Client { code, .. } => code,
            _ => "not a client error",
        };
        let kind = format!("{} {code}", c.ty);
        let mut seen = REFUSED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.insert(kind.clone()) {
            eprintln!("NOTE stock-updates refuses a command webhooks sends: {kind}: {e:?}");
        }
    }
}

static REFUSED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
