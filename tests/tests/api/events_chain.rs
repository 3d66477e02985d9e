//! The chain, in-process as in the cloud: a Shopify webhook is checked and queued, stock-updates applies the
//! command, the ledger's outbox is relayed, and the event reaches `/v1/events/stream`.

use std::time::Duration;

use serde_json::{Value, json};
use stockroom_e2e::{Backend, TestApp, count_rows};

on_every_store!(
    a_shopify_order_travels_from_the_webhook_to_the_event_stream,
    a_forged_missing_or_retired_signature_is_401_and_applies_nothing,
    the_webhook_signed_with_the_secret_being_rotated_out_is_still_accepted,
    an_inventory_level_from_shopify_sets_on_hand_through_the_mapping_and_ignores_older_counts,
    an_event_delivery_with_headers_without_x_is_taken_as_a_webhook_is,
    an_event_of_a_type_no_function_takes_is_answered_by_its_type_whatever_its_data,
    a_webhook_the_ledger_could_not_apply_is_ignored_with_its_reason_and_queues_nothing,
    an_order_with_a_very_long_name_still_sells,
);

fn order(id: u64, sku: &str, quantity: i64) -> Value {
    json!({
        "id": id, "name": format!("#{id}"), "email": "jane@example.com",
        "customer": { "first_name": "Jane", "last_name": "Doe", "email": "jane@example.com", "phone": "+15551234567" },
        "shipping_address": { "address1": "1 Secret Lane", "city": "Ottawa", "phone": "+15557654321" },
        "line_items": [{ "id": 1, "variant_id": 2, "sku": sku, "quantity": quantity, "fulfillable_quantity": quantity }]
    })
}

const CURRENT: &str = "shpss_current_secret";
const PREVIOUS: &str = "shpss_previous_secret";

async fn a_shopify_order_travels_from_the_webhook_to_the_event_stream(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("MUG", "shop", 10).await;
    let mut stream = app.subscribe("?types=dev.stockroom.reservation.").await;

    let id: u64 = 9_007_199_254_740_993; // 2^53 + 1: kept exact through the chain
    let r = app.shopify("orders/create", "wh-1", &order(id, "MUG", 3), Some(CURRENT)).await;
    assert_eq!((r.status, r.body["outcome"].as_str()), (200, Some("accepted")), "{r:?}");

    let mut seen = Vec::new();
    while let Some(e) = stream.next(Duration::from_secs(10)).await {
        seen.push(e.event.clone());
        if e.event == "dev.stockroom.reservation.committed.v1" {
            assert_eq!(e.data["subject"], "MUG");
            assert_eq!(e.data["data"]["movement"]["cause"], format!("reservation:shopify-order-{id}"));
            break;
        }
    }
    assert_eq!(seen, ["dev.stockroom.reservation.held.v1", "dev.stockroom.reservation.committed.v1"]);
    let total = &app.stock("MUG").await["total"];
    assert_eq!((total["on_hand"].as_i64(), total["committed"].as_i64()), (Some(10), Some(3)));

    // Shopify delivers the same webhook again: nothing more happens.
    assert_eq!(app.shopify("orders/create", "wh-1", &order(id, "MUG", 3), Some(CURRENT)).await.status, 200);
    let r = app.shopify("orders/fulfilled", "wh-2", &order(id, "MUG", 3), Some(CURRENT)).await;
    assert_eq!(r.status, 200);
    let fulfilled = stream.next(Duration::from_secs(10)).await.expect("the fulfilment event");
    assert_eq!(fulfilled.event, "dev.stockroom.reservation.fulfilled.v1");
    assert!(stream.next(Duration::from_millis(500)).await.is_none(), "the repeated webhook made no event");
    let total = &app.stock("MUG").await["total"];
    assert_eq!((total["on_hand"].as_i64(), total["committed"].as_i64()), (Some(7), Some(0)));

    // The customer never left the webhooks function.
    let movements = app.all_movements("").await.iter().map(Value::to_string).collect::<String>();
    for private in ["Jane", "Doe", "jane@example.com", "Secret Lane", "+1555"] {
        assert!(!movements.contains(private), "{private} reached the ledger");
    }
}

async fn a_forged_missing_or_retired_signature_is_401_and_applies_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("MUG", "shop", 10).await;
    let before = app.all_movements("").await.len();

    for (n, secret) in [Some("forged"), None, Some("shpss_retired_long_ago")].into_iter().enumerate() {
        let r = app.shopify("orders/create", &format!("bad-{n}"), &order(42, "MUG", 1), secret).await;
        assert_eq!((r.status, r.error_code()), (401, "unauthorized"), "{secret:?}: {r:?}");
    }
    // A body changed after signing does not verify either.
    let body = order(43, "MUG", 1);
    let signature = stockroom_e2e::shopify_signature(CURRENT, body.to_string().as_bytes());
    let tampered = order(43, "MUG", 9).to_string().into_bytes();
    let headers = [
        ("content-type", "application/json"),
        ("X-Shopify-Topic", "orders/create"),
        ("X-Shopify-Webhook-Id", "tampered"),
        ("X-Shopify-Hmac-Sha256", signature.as_str()),
    ];
    assert_eq!(app.send("POST", "/webhooks/shopify", &headers, Some(tampered)).await.status, 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox").await, 0, "nothing was queued");
    assert_eq!(app.all_movements("").await.len(), before, "nothing was applied");
    assert_eq!(app.stock("MUG").await["total"]["committed"], 0);
}

async fn the_webhook_signed_with_the_secret_being_rotated_out_is_still_accepted(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("MUG", "shop", 10).await;
    let r = app.shopify("orders/create", "rot-1", &order(7, "MUG", 2), Some(PREVIOUS)).await;
    assert_eq!(r.status, 200, "{r:?}");
    for _ in 0..200 {
        if app.stock("MUG").await["total"]["committed"] == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the order was not applied");
}

async fn an_inventory_level_from_shopify_sets_on_hand_through_the_mapping_and_ignores_older_counts(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("warehouse", 1).await;
    let item = "12345678901234567890"; // above 2^53, below 2^64: kept exact
    assert_eq!(app.json("PUT", &format!("/v1/shopify/items/{item}"), &json!({ "sku": "LAMP" })).await.status, 200);
    assert_eq!(
        app.json("PUT", "/v1/shopify/locations/655441491", &json!({ "location": "warehouse" })).await.status,
        200
    );
    let level = |available: i64, at: &str| json!({ "inventory_item_id": 12_345_678_901_234_567_890_u64, "location_id": 655441491, "available": available, "updated_at": at });
    assert_eq!(
        app.shopify("inventory_levels/update", "lvl-2", &level(40, "2026-11-26T10:00:00-05:00"), Some(CURRENT))
            .await
            .status,
        200
    );
    // An older count delivered late changes nothing.
    assert_eq!(
        app.shopify("inventory_levels/update", "lvl-1", &level(25, "2026-11-26T09:00:00-05:00"), Some(CURRENT))
            .await
            .status,
        200
    );
    let mut on_hand = None;
    for _ in 0..200 {
        let r = app.get("/v1/stock/LAMP").await;
        if r.status == 200 {
            on_hand = r.body["total"]["on_hand"].as_i64();
        }
        if on_hand == Some(40)
            && count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox WHERE state = 'pending'").await == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(on_hand, Some(40));
    assert_eq!(app.all_movements("&sku=LAMP").await.len(), 1, "the stale count booked nothing");
}

/// Shopify's newer event deliveries name their headers without `X-` (shopify-app-js's "events" family), and carry
/// the event's id in `shopify-event-id`: the same order, the same checks, the same dedup.
async fn an_event_delivery_with_headers_without_x_is_taken_as_a_webhook_is(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("CAP", "shop", 10).await;
    let send = |body: Value, secret: &str, event_id: &'static str| {
        let raw = body.to_string().into_bytes();
        let signature = stockroom_e2e::shopify_signature(secret, &raw);
        let app = &app;
        async move {
            let headers = [
                ("content-type", "application/json"),
                ("shopify-topic", "orders/create"),
                ("shopify-event-id", event_id),
                ("shopify-shop-domain", "test.myshopify.com"),
                ("shopify-api-version", "2026-10"),
                ("shopify-hmac-sha256", signature.as_str()),
            ];
            app.send("POST", "/webhooks/shopify", &headers, Some(raw)).await
        }
    };
    let forged = send(order(77, "CAP", 2), "not-the-secret", "ev-0").await;
    assert_eq!(forged.status, 401, "the signature is checked under the new name too: {forged:?}");

    let r = send(order(77, "CAP", 2), CURRENT, "ev-1").await;
    assert_eq!((r.status, r.body["outcome"].as_str()), (200, Some("accepted")), "{r:?}");
    assert_eq!(send(order(77, "CAP", 2), CURRENT, "ev-1").await.status, 200, "a redelivery");
    let mut committed = None;
    for _ in 0..100 {
        committed = app.stock("CAP").await["total"]["committed"].as_i64();
        if committed == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, Some(2), "the order was applied, once");
    assert_eq!(app.all_movements("&sku=CAP").await.iter().filter(|m| m["kind"] == "commit").count(), 1);
}

/// A valid CloudEvent that is no command is told so by its type (422 `unsupported_command`), whether its data is
/// JSON, `data_base64` or binary: the data of an event nobody takes is not ours to judge.
async fn an_event_of_a_type_no_function_takes_is_answered_by_its_type_whatever_its_data(b: Backend) {
    let app = TestApp::spawn(b).await;
    let structured = |data: Value| {
        let mut event =
            json!({ "specversion": "1.0", "id": "e-1", "source": "//test/other", "type": "com.example.thing.v1" });
        if let (Some(event), Some(data)) = (event.as_object_mut(), data.as_object()) {
            event.extend(data.clone());
        }
        event.to_string().into_bytes()
    };
    let bodies = [
        structured(json!({ "data": { "x": 1 } })),
        structured(json!({ "data_base64": "AAECAwT/", "datacontenttype": "application/octet-stream" })),
        structured(json!({ "data_base64": "eyJ4IjoxfQ==" })),
        structured(json!({})),
    ];
    for body in bodies {
        let r =
            app.send("POST", "/events", &[("content-type", "application/cloudevents+json")], Some(body.clone())).await;
        assert_eq!(
            (r.status, r.error_code()),
            (422, "unsupported_command"),
            "{}: {r:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let binary = [
        ("content-type", "application/octet-stream"),
        ("ce-specversion", "1.0"),
        ("ce-id", "e-2"),
        ("ce-source", "//test/other"),
        ("ce-type", "com.example.thing.v1"),
    ];
    let r = app.send("POST", "/events", &binary, Some(vec![0, 159, 146, 150])).await;
    assert_eq!((r.status, r.error_code()), (422, "unsupported_command"), "binary: {r:?}");
    assert!(app.all_movements("").await.is_empty(), "nothing was applied");
}

/// A webhook Shopify sends that the ledger would refuse once queued (a quantity past its range, more lines than a
/// hold takes, a negative level) was once answered `accepted` and then refused by stock-updates: acknowledged and
/// lost. It is checked with stock-updates' own decoder first, and answered `ignored` with the reason.
async fn a_webhook_the_ledger_could_not_apply_is_ignored_with_its_reason_and_queues_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("MUG", "shop", 10).await;
    assert_eq!(app.json("PUT", "/v1/shopify/items/77", &json!({ "sku": "MUG" })).await.status, 200);
    assert_eq!(app.json("PUT", "/v1/shopify/locations/88", &json!({ "location": "shop" })).await.status, 200);
    let before = app.all_movements("").await.len();

    let mut wide = order(61, "MUG", 1);
    wide["line_items"] = (0..101).map(|n| json!({ "id": n, "sku": format!("W-{n}"), "quantity": 1 })).collect();
    let level =
        json!({ "inventory_item_id": 77, "location_id": 88, "available": -3, "updated_at": "2026-11-26T10:00:00Z" });
    for (topic, body, reason) in [
        ("orders/create", order(60, "MUG", 10_000_000_000_000), "invalid_quantity"),
        ("orders/create", wide, "invalid_lines"),
        ("inventory_levels/update", level, "invalid_quantity"),
    ] {
        let r = app.shopify(topic, &format!("refused-{reason}-{topic}"), &body, Some(CURRENT)).await;
        assert_eq!(
            (r.status, r.body["outcome"].as_str(), r.body["reason"].as_str()),
            (200, Some("ignored"), Some(reason)),
            "{topic}: {r:?}"
        );
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox").await, 0, "nothing was queued");
    assert_eq!(app.all_movements("").await.len(), before, "nothing was applied");
    assert_eq!(app.stock("MUG").await["total"]["on_hand"], 10);
}

/// The order's name is only a label on the sale: a name longer than a reference may be is cut, and the sale lands.
async fn an_order_with_a_very_long_name_still_sells(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("shop", 1).await;
    app.receive("MUG", "shop", 10).await;
    let mut long = order(62, "MUG", 2);
    long["name"] = json!(format!("#62-{}", "ü".repeat(300)));
    let r = app.shopify("orders/create", "long-name", &long, Some(CURRENT)).await;
    assert_eq!((r.status, r.body["outcome"].as_str()), (200, Some("accepted")), "{r:?}");
    for _ in 0..200 {
        if app.stock("MUG").await["total"]["committed"] == 2 {
            let reservation = app.get("/v1/reservations/shopify-order-62").await;
            assert!(
                reservation.body["reference"].as_str().is_some_and(|r| r.starts_with("shopify:#62-ü")),
                "{reservation:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the order with a long name was not applied");
}
