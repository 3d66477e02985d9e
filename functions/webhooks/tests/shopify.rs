//! The Shopify webhook core against payloads modelled on Shopify's documented examples (API 2024-10).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use stockroom_events::command::{self, Adjust, Hold, ReservationRef, SetFromExternal};
use stockroom_webhooks::shopify::{
    HMAC_HEADER, HeaderError, HmacError, OutgoingCommand, Secrets, WebhookError, WebhookHeaders, commands, header,
    verify_hmac,
};

const ORDERS_CREATE: &[u8] = include_bytes!("fixtures/orders-create.json");
const ORDERS_CANCELLED: &[u8] = include_bytes!("fixtures/orders-cancelled.json");
const ORDERS_FULFILLED: &[u8] = include_bytes!("fixtures/orders-fulfilled.json");
const REFUNDS_CREATE: &[u8] = include_bytes!("fixtures/refunds-create.json");
const INVENTORY_LEVELS_UPDATE: &[u8] = include_bytes!("fixtures/inventory-levels-update.json");

const WEBHOOK_ID: &str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043";
/// The documented example's order id: above 2^53 already.
const ORDER_ID: &str = "820982911946154508";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn headers(topic: &str) -> WebhookHeaders {
    WebhookHeaders {
        topic: topic.to_owned(),
        webhook_id: WEBHOOK_ID.to_owned(),
        shop_domain: Some("jsmith.myshopify.com".to_owned()),
        triggered_at: Some("2024-10-08T14:36:28.000Z".to_owned()),
    }
}

/// Shopify inventory item 271878346596884015 at location 24826418 is `IPOD2008PINK` at `warehouse-east`.
fn mapping(item: u64, location: u64) -> Option<(String, String)> {
    match (item, location) {
        (271_878_346_596_884_015, 24_826_418) => Some(("IPOD2008PINK".to_owned(), "warehouse-east".to_owned())),
        (9_007_199_254_740_993, 9_007_199_254_740_995) => Some(("BIG-1".to_owned(), "far-away".to_owned())),
        _ => None,
    }
}

fn run(topic: &str, body: &[u8]) -> Result<Vec<OutgoingCommand>, WebhookError> {
    commands(&headers(topic), body, &mapping, "store-front")
}

fn ok(topic: &str, body: &[u8]) -> Vec<OutgoingCommand> {
    match run(topic, body) {
        Ok(list) => list,
        Err(e) => panic!("{topic}: {e}"),
    }
}

fn data<T: serde::de::DeserializeOwned>(command: &OutgoingCommand) -> T {
    match serde_json::from_value(command.data.clone()) {
        Ok(data) => data,
        Err(e) => panic!("{} data does not fit its type: {e}: {}", command.ty, command.data),
    }
}

// --- signature -------------------------------------------------------------------------------------------

#[test]
fn hmac_is_valid_with_the_current_secret() {
    let secrets = Secrets::parse("shpss_current");
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&sign("shpss_current", ORDERS_CREATE))), Ok(()));
}

#[test]
fn hmac_is_valid_with_the_old_secret_during_rotation() {
    let secrets = Secrets::parse(" shpss_new , shpss_old ,");
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&sign("shpss_old", ORDERS_CREATE))), Ok(()));
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&sign("shpss_new", ORDERS_CREATE))), Ok(()));
}

#[test]
fn hmac_from_a_forged_secret_is_refused() {
    let secrets = Secrets::parse("shpss_new,shpss_old");
    let forged = sign("shpss_guess", ORDERS_CREATE);
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&forged)), Err(HmacError::Mismatch));
}

#[test]
fn hmac_over_a_tampered_body_is_refused() {
    let secrets = Secrets::parse("shpss_current");
    let signature = sign("shpss_current", ORDERS_CREATE);
    let tampered = String::from_utf8_lossy(ORDERS_CREATE).replace("\"quantity\": 2", "\"quantity\": 200");
    assert_ne!(tampered.as_bytes(), ORDERS_CREATE);
    assert_eq!(verify_hmac(&secrets, tampered.as_bytes(), Some(&signature)), Err(HmacError::Mismatch));
}

#[test]
fn hmac_header_missing_or_blank_is_refused() {
    let secrets = Secrets::parse("shpss_current");
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, None), Err(HmacError::Missing));
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some("  ")), Err(HmacError::Missing));
}

#[test]
fn hmac_header_that_is_not_base64_of_a_tag_is_refused() {
    let secrets = Secrets::parse("shpss_current");
    for garbled in ["not base64 at all!", "%%%%", "c2hvcnQ=", &STANDARD.encode([7u8; 64])] {
        assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(garbled)), Err(HmacError::Malformed), "{garbled}");
    }
}

#[test]
fn hmac_header_is_accepted_without_padding_and_with_surrounding_spaces() {
    let secrets = Secrets::parse("shpss_current");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"shpss_current").expect("any key length");
    mac.update(ORDERS_CREATE);
    let unpadded = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&unpadded)), Ok(()));
    let spaced = format!(" {} ", sign("shpss_current", ORDERS_CREATE));
    assert_eq!(verify_hmac(&secrets, ORDERS_CREATE, Some(&spaced)), Ok(()));
}

#[test]
fn hmac_without_any_configured_secret_refuses_everything() {
    let none = Secrets::parse(" , ");
    assert_eq!(verify_hmac(&none, ORDERS_CREATE, Some(&sign("", ORDERS_CREATE))), Err(HmacError::NoSecrets));
}

// --- headers ---------------------------------------------------------------------------------------------

#[test]
fn header_names_are_matched_in_any_case() {
    let signature = sign("shpss_current", ORDERS_CREATE);
    let pairs = vec![
        ("x-shopify-topic".to_owned(), "orders/create".to_owned()),
        ("X-SHOPIFY-WEBHOOK-ID".to_owned(), WEBHOOK_ID.to_owned()),
        ("X-Shopify-Shop-Domain".to_owned(), "jsmith.myshopify.com".to_owned()),
        ("x-ShOpIfY-tRiGgErEd-At".to_owned(), "2024-10-08T14:36:28.000Z".to_owned()),
        ("X-Shopify-Hmac-SHA256".to_owned(), signature.clone()),
    ];
    assert_eq!(WebhookHeaders::from_pairs(&pairs), Ok(headers("orders/create")));
    assert_eq!(header(&pairs, HMAC_HEADER), Some(signature.as_str()));
    assert_eq!(header(&pairs, "X-Shopify-Hmac-Sha256"), Some(signature.as_str()));
}

#[test]
fn headers_can_come_from_a_case_insensitive_lookup() {
    let lookup = |name: &str| match name.to_ascii_lowercase().as_str() {
        "x-shopify-topic" => Some("refunds/create".to_owned()),
        "x-shopify-webhook-id" => Some(WEBHOOK_ID.to_owned()),
        _ => None,
    };
    let read = WebhookHeaders::from_lookup(lookup);
    assert_eq!(
        read,
        Ok(WebhookHeaders {
            topic: "refunds/create".to_owned(),
            webhook_id: WEBHOOK_ID.to_owned(),
            shop_domain: None,
            triggered_at: None
        })
    );
}

#[test]
fn headers_without_topic_or_webhook_id_are_refused() {
    let only_id = [("X-Shopify-Webhook-Id", WEBHOOK_ID)];
    assert_eq!(WebhookHeaders::from_pairs(&only_id), Err(HeaderError::Missing { header: "x-shopify-topic" }));
    let only_topic = [("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", " ")];
    assert_eq!(WebhookHeaders::from_pairs(&only_topic), Err(HeaderError::Missing { header: "x-shopify-webhook-id" }));
    let long = "x".repeat(129);
    let unusable = [("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", long.as_str())];
    assert_eq!(WebhookHeaders::from_pairs(&unusable), Err(HeaderError::Invalid { header: "x-shopify-webhook-id" }));
}

// --- topics ----------------------------------------------------------------------------------------------

#[test]
fn orders_create_becomes_one_sell_of_the_tracked_skus_summed() {
    let list = ok("orders/create", ORDERS_CREATE);
    assert_eq!(list.len(), 1);
    let sell = &list[0];
    assert_eq!(sell.ty, command::SELL);
    assert_eq!(sell.id, format!("shopify:{WEBHOOK_ID}:0"));
    assert_eq!(sell.ordering_key, format!("shopify-order-{ORDER_ID}"));
    // Pink appears twice (1 + 2), red once; gift wrapping (sku null) and the gift card (sku "") are not stock.
    assert_eq!(
        sell.data,
        json!({
            "reservation_id": format!("shopify-order-{ORDER_ID}"),
            "lines": [{"sku": "IPOD2008PINK", "quantity": 3}, {"sku": "IPOD2008RED", "quantity": 2}],
            "reference": "shopify:#1001"
        })
    );
    let hold: Hold = data(sell);
    assert!(hold.lines.iter().all(|l| l.location.is_none()), "sourced by priority");
}

#[test]
fn orders_create_without_a_name_is_referenced_by_its_id() {
    let body = br#"{"id": 5, "line_items": [{"sku": "A-1", "quantity": 1, "variant_id": null}]}"#;
    let hold: Hold = data(&ok("orders/create", body)[0]);
    assert_eq!(hold.reference.as_deref(), Some("shopify:5"));
}

#[test]
fn orders_create_with_nothing_stockroom_tracks_gives_no_command() {
    let body =
        br##"{"id": 6, "name": "#1002", "line_items": [{"sku": null, "quantity": 1}, {"sku": "X", "quantity": 0},
        {"sku": "not a sku", "quantity": 1}]}"##;
    assert_eq!(ok("orders/create", body), vec![]);
    assert_eq!(ok("orders/cancelled", body), vec![]);
    assert_eq!(ok("orders/fulfilled", body), vec![]);
}

#[test]
fn orders_cancelled_releases_the_order_reservation() {
    let list = ok("orders/cancelled", ORDERS_CANCELLED);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ty, command::RELEASE);
    assert_eq!(list[0].id, format!("shopify:{WEBHOOK_ID}:0"));
    assert_eq!(list[0].ordering_key, format!("shopify-order-{ORDER_ID}"));
    let release: ReservationRef = data(&list[0]);
    assert_eq!(release.reservation_id, format!("shopify-order-{ORDER_ID}"));
}

#[test]
fn orders_fulfilled_fulfils_the_order_reservation() {
    let list = ok("orders/fulfilled", ORDERS_FULFILLED);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ty, command::FULFIL);
    assert_eq!(list[0].ordering_key, format!("shopify-order-{ORDER_ID}"));
    assert_eq!(list[0].data, json!({"reservation_id": format!("shopify-order-{ORDER_ID}")}));
}

#[test]
fn refunds_create_restocks_returned_lines_at_the_default_location_and_leaves_cancelled_ones_to_the_release() {
    let list = ok("refunds/create", REFUNDS_CREATE);
    // Returned pink (1) comes back; cancelled red (2) never left, so the order's release returns it; the
    // no_restock line and the sku-less line give nothing.
    assert_eq!(list.len(), 1);
    let expect = [("IPOD2008PINK", 1)];
    for (n, (command, (sku, units))) in list.iter().zip(expect).enumerate() {
        assert_eq!(command.ty, command::ADJUST);
        assert_eq!(command.id, format!("shopify:{WEBHOOK_ID}:{n}"));
        assert_eq!(command.ordering_key, sku);
        assert_eq!(
            command.data,
            json!({"changes": [{"sku": sku, "location": "store-front", "delta": units, "reason": "shopify_restock",
                "reference": "shopify-refund:890088186047892319"}]})
        );
        let _: Adjust = data(command);
    }
}

#[test]
fn refund_lines_are_placed_through_the_mapping_when_they_name_an_inventory_item() {
    let body = br#"{"id": 77, "refund_line_items": [
        {"quantity": 2, "restock_type": "return", "location_id": 24826418,
         "line_item": {"sku": "IPOD2008PINK", "inventory_item_id": 271878346596884015}},
        {"quantity": 1, "restock_type": "return", "location_id": 24826418,
         "line_item": {"sku": "IPOD2008PINK", "inventory_item_id": "271878346596884015"}},
        {"quantity": 1, "restock_type": "legacy_restock", "location_id": 1,
         "line_item": {"sku": "IPOD2008PINK", "inventory_item_id": 271878346596884015}}
    ]}"#;
    let list = ok("refunds/create", body);
    let changes: Vec<(String, String, Option<i64>)> =
        list.iter().flat_map(|c| data::<Adjust>(c).changes).map(|c| (c.sku, c.location, c.delta)).collect();
    assert_eq!(
        changes,
        vec![
            ("IPOD2008PINK".to_owned(), "warehouse-east".to_owned(), Some(3)),
            // An unmapped pair falls back to the default location.
            ("IPOD2008PINK".to_owned(), "store-front".to_owned(), Some(1)),
        ]
    );
}

#[test]
fn older_refunds_without_restock_type_follow_the_refund_restock_flag() {
    let restocked =
        br#"{"id": 78, "restock": true, "refund_line_items": [{"quantity": 1, "line_item": {"sku": "A-1"}}]}"#;
    assert_eq!(ok("refunds/create", restocked).len(), 1);
    let kept = br#"{"id": 79, "restock": false, "refund_line_items": [{"quantity": 1, "line_item": {"sku": "A-1"}}]}"#;
    assert_eq!(ok("refunds/create", kept), vec![]);
    let legacy = br#"{"id": 80, "refund_line_items": [{"quantity": 4, "restock_type": "legacy_restock",
        "line_item": {"sku": "A-1"}}]}"#;
    let adjust: Adjust = data(&ok("refunds/create", legacy)[0]);
    assert_eq!(adjust.changes[0].delta, Some(4));
}

#[test]
fn a_restock_with_no_mapped_location_and_no_default_is_an_error() {
    let result = commands(&headers("refunds/create"), REFUNDS_CREATE, &mapping, "");
    assert_eq!(
        result,
        Err(WebhookError::NoLocation { refund_id: "890088186047892319".to_owned(), sku: "IPOD2008PINK".to_owned() })
    );
}

#[test]
fn inventory_levels_update_sets_on_hand_from_shopify_at_the_mapped_row() {
    let list = ok("inventory_levels/update", INVENTORY_LEVELS_UPDATE);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ty, command::SET_FROM_EXTERNAL);
    assert_eq!(list[0].id, format!("shopify:{WEBHOOK_ID}:0"));
    assert_eq!(list[0].ordering_key, "IPOD2008PINK");
    let set: SetFromExternal = data(&list[0]);
    assert_eq!(
        set,
        SetFromExternal {
            sku: "IPOD2008PINK".to_owned(),
            location: "warehouse-east".to_owned(),
            on_hand: 42,
            system: "shopify".to_owned(),
            observed_at: "2024-10-08T14:36:27Z".to_owned(),
            reference: Some("shopify-inventory-item:271878346596884015@24826418".to_owned()),
        }
    );
}

#[test]
fn an_unmapped_inventory_level_is_reported_not_guessed() {
    let body = br#"{"inventory_item_id": 1, "location_id": 2, "available": 5, "updated_at": "2024-10-08T10:36:27Z"}"#;
    assert_eq!(
        run("inventory_levels/update", body),
        Err(WebhookError::Unmapped { inventory_item_id: "1".to_owned(), location_id: "2".to_owned() })
    );
}

#[test]
fn an_inventory_level_with_nothing_available_to_count_gives_no_command() {
    let body = br#"{"inventory_item_id": 271878346596884015, "location_id": 24826418, "available": null,
        "updated_at": "2024-10-08T10:36:27-04:00"}"#;
    assert_eq!(ok("inventory_levels/update", body), vec![]);
}

#[test]
fn other_topics_are_unsupported() {
    assert_eq!(
        run("products/update", b"{}"),
        Err(WebhookError::UnsupportedTopic { topic: "products/update".to_owned() })
    );
}

#[test]
fn payloads_that_are_not_shopify_s_are_bad_payloads() {
    for (topic, body) in [
        ("orders/create", &b"not json"[..]),
        ("orders/create", br#"{"line_items": []}"#),
        ("orders/create", br#"{"id": 1.5e3, "line_items": []}"#),
        ("refunds/create", br#"{"id": -3}"#),
        (
            "inventory_levels/update",
            br#"{"inventory_item_id": 1, "location_id": 2, "available": 1, "updated_at": "soon"}"#,
        ),
    ] {
        let result = run(topic, body);
        assert!(matches!(result, Err(WebhookError::BadPayload { .. })), "{topic} {:?}: {result:?}", body);
    }
}

// --- exactness, privacy, stability -----------------------------------------------------------------------

#[test]
fn an_id_of_2_pow_53_plus_1_stays_exact_end_to_end() {
    // 2^53 + 1 is the first integer an f64 cannot hold: through a float it would become ...992.
    for id in ["9007199254740993", "\"9007199254740993\""] {
        let body = format!(r#"{{"id": {id}, "name": "", "line_items": [{{"sku": "A-1", "quantity": 1}}]}}"#);
        let sell = &ok("orders/create", body.as_bytes())[0];
        assert_eq!(sell.data["reservation_id"], "shopify-order-9007199254740993");
        assert_eq!(sell.data["reference"], "shopify:9007199254740993");
        assert_eq!(sell.ordering_key, "shopify-order-9007199254740993");
    }
    let level = br#"{"inventory_item_id": 9007199254740993, "location_id": 9007199254740995, "available": 7,
        "updated_at": "2024-10-08T10:36:27Z"}"#;
    let set: SetFromExternal = data(&ok("inventory_levels/update", level)[0]);
    assert_eq!(set.sku, "BIG-1");
    assert_eq!(set.reference.as_deref(), Some("shopify-inventory-item:9007199254740993@9007199254740995"));
    // The refund fixture's id, 890088186047892319, is far above 2^53 too.
    let adjust: Adjust = data(&ok("refunds/create", REFUNDS_CREATE)[0]);
    assert_eq!(adjust.changes[0].reference.as_deref(), Some("shopify-refund:890088186047892319"));
}

#[test]
fn customer_data_never_reaches_a_command() {
    let personal = [
        "Jane",
        "Doe",
        "jane.doe@example.net",
        "+16135550142",
        "+16135550199",
        "742 Evergreen Terrace",
        "31 Spooner Street",
        "Springfield",
        "Quahog",
        "K2P 1L4",
        "02903",
        "216.191.105.146",
        "Apartment 3",
        "back door",
        "Happy birthday",
        "Engraving",
        "scratched",
        "115310627314723954",
    ];
    let payloads = [
        ("orders/create", ORDERS_CREATE),
        ("orders/cancelled", ORDERS_CANCELLED),
        ("orders/fulfilled", ORDERS_FULFILLED),
        ("refunds/create", REFUNDS_CREATE),
    ];
    for (topic, body) in payloads {
        let source = String::from_utf8_lossy(body);
        assert!(source.contains("Jane"), "{topic}: the fixture should carry customer data");
        let list = ok(topic, body);
        assert!(!list.is_empty(), "{topic}");
        let out = match serde_json::to_string(&list) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        };
        for secret in personal {
            assert!(!out.contains(secret), "{topic}: {secret:?} leaked into {out}");
        }
    }
}

#[test]
fn customer_fields_of_any_shape_are_never_even_read() {
    // Were customer fields deserialised, these types would fail; skipped unread, they cannot.
    let body = br#"{"id": 9, "email": 12, "customer": "Jane Doe", "phone": {"n": [1]}, "billing_address": true,
        "shipping_address": [], "note": 3.5, "line_items": [{"sku": "A-1", "quantity": 1, "name": null}]}"#;
    let list = ok("orders/create", body);
    assert_eq!(list.len(), 1);
    let error = match run("orders/create", br#"{"customer": {"email": "jane.doe@example.net"}}"#) {
        Err(e) => e.to_string(),
        Ok(list) => panic!("an order without id gave {list:?}"),
    };
    assert!(!error.contains("jane.doe"), "{error}");
}

#[test]
fn the_same_webhook_gives_the_same_command_ids() {
    for (topic, body) in [
        ("orders/create", ORDERS_CREATE),
        ("orders/cancelled", ORDERS_CANCELLED),
        ("orders/fulfilled", ORDERS_FULFILLED),
        ("refunds/create", REFUNDS_CREATE),
        ("inventory_levels/update", INVENTORY_LEVELS_UPDATE),
    ] {
        let first = ok(topic, body);
        let again = ok(topic, body);
        assert_eq!(first, again, "{topic}");
        let ids: Vec<&str> = first.iter().map(|c| c.id.as_str()).collect();
        let expected: Vec<String> = (0..first.len()).map(|n| format!("shopify:{WEBHOOK_ID}:{n}")).collect();
        assert_eq!(ids, expected, "{topic}");
    }
    // Another delivery (another webhook id) of the same order gives other command ids.
    let other = WebhookHeaders { webhook_id: "another-delivery".to_owned(), ..headers("orders/create") };
    let list = commands(&other, ORDERS_CREATE, &mapping, "store-front");
    assert_eq!(list.map(|l| l[0].id.clone()), Ok("shopify:another-delivery:0".to_owned()));
}

#[test]
fn every_command_is_a_stockroom_command_type_with_data_of_its_shape() {
    for (topic, body) in [
        ("orders/create", ORDERS_CREATE),
        ("orders/cancelled", ORDERS_CANCELLED),
        ("orders/fulfilled", ORDERS_FULFILLED),
        ("refunds/create", REFUNDS_CREATE),
        ("inventory_levels/update", INVENTORY_LEVELS_UPDATE),
    ] {
        for command in ok(topic, body) {
            assert!(command::ALL.contains(&command.ty), "{}", command.ty);
            // The events crate's types deny unknown fields: a stray field would fail here.
            let reencoded: Value = match command.ty {
                command::SELL => serde_json::to_value(data::<Hold>(&command)),
                command::RELEASE | command::FULFIL => serde_json::to_value(data::<ReservationRef>(&command)),
                command::ADJUST => serde_json::to_value(data::<Adjust>(&command)),
                command::SET_FROM_EXTERNAL => serde_json::to_value(data::<SetFromExternal>(&command)),
                other => panic!("{topic} gave {other}"),
            }
            .unwrap_or(Value::Null);
            assert_eq!(reencoded, command.data, "{topic}");
        }
    }
}
