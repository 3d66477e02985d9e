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
