//! The contract's locations, stock levels and SKU policies: `PUT/GET /v1/locations`, `GET /v1/stock/{sku}`,
//! `GET /v1/stock?skus=` and `PUT /v1/skus/{sku}/policy`.

use serde_json::{Value, json};
use stockroom_e2e::{Backend, TestApp};

on_every_store!(
    creating_a_location_answers_201_and_updating_it_answers_200,
    a_location_without_a_name_is_named_after_its_id,
    locations_are_listed_by_priority_then_id,
    a_bad_location_id_or_priority_is_refused_with_422_and_stores_nothing,
    stock_shows_every_location_and_the_total_of_the_five_figures,
    stock_of_a_sku_never_stocked_is_404_unknown_sku,
    stock_of_a_malformed_sku_is_422_invalid_sku,
    stock_of_several_skus_answers_in_the_order_asked_leaving_unknown_ones_out,
    stock_of_more_than_100_skus_at_once_is_refused,
    safety_stock_reduces_available_at_every_location_and_is_never_held,
    a_policy_update_keeps_the_fields_left_out_and_null_clears_low_stock_days,
    a_bad_policy_is_refused_with_422_and_changes_nothing,
);

/// The figures of one location in a `GET /v1/stock/{sku}` body.
fn at<'a>(stock: &'a Value, location: &str) -> &'a Value {
    stock["locations"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["location"] == location))
        .unwrap_or_else(|| panic!("no {location} in {stock}"))
}

fn figures(location: &str, on_hand: i64, reserved: i64, committed: i64, safety_stock: i64, available: i64) -> Value {
    json!({ "location": location, "on_hand": on_hand, "reserved": reserved, "committed": committed,
            "safety_stock": safety_stock, "available": available })
}

fn total(on_hand: i64, reserved: i64, committed: i64, safety_stock: i64, available: i64) -> Value {
    json!({ "on_hand": on_hand, "reserved": reserved, "committed": committed,
            "safety_stock": safety_stock, "available": available })
}

async fn creating_a_location_answers_201_and_updating_it_answers_200(b: Backend) {
    let app = TestApp::spawn(b).await;

    let created = app.json("PUT", "/v1/locations/east-dc", &json!({ "name": "East DC", "priority": 5 })).await;
    let updated = app.json("PUT", "/v1/locations/east-dc", &json!({ "name": "East", "priority": 7 })).await;

    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body, json!({ "location": "east-dc", "name": "East DC", "priority": 5 }));
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body, json!({ "location": "east-dc", "name": "East", "priority": 7 }));
    let list = app.get("/v1/locations").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body, json!({ "locations": [{ "location": "east-dc", "name": "East", "priority": 7 }] }));
}

async fn a_location_without_a_name_is_named_after_its_id(b: Backend) {
    let app = TestApp::spawn(b).await;

    let created = app.json("PUT", "/v1/locations/store:12", &json!({ "priority": 0 })).await;

    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body, json!({ "location": "store:12", "name": "store:12", "priority": 0 }));
}

async fn locations_are_listed_by_priority_then_id(b: Backend) {
    let app = TestApp::spawn(b).await;
    for (id, priority) in [("c", 2), ("b", 1), ("a", 2), ("z", 0)] {
        app.location(id, priority).await;
    }

    let list = app.get("/v1/locations").await;

    assert_eq!(list.status, 200, "{list:?}");
    let order: Vec<(&str, i64)> = list.body["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| (l["location"].as_str().unwrap_or_default(), l["priority"].as_i64().unwrap_or(-1)))
        .collect();
    assert_eq!(order, [("z", 0), ("b", 1), ("a", 2), ("c", 2)]);
}

async fn a_bad_location_id_or_priority_is_refused_with_422_and_stores_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let long = "x".repeat(65);
    let cases = [
        ("/v1/locations/a%20b".to_owned(), json!({ "priority": 1 }), "invalid_location"),
        ("/v1/locations/%C3%A9".to_owned(), json!({ "priority": 1 }), "invalid_location"),
        (format!("/v1/locations/{long}"), json!({ "priority": 1 }), "invalid_location"),
        ("/v1/locations/ok".to_owned(), json!({ "priority": -1 }), "invalid_priority"),
        ("/v1/locations/ok".to_owned(), json!({ "priority": 1_000_001 }), "invalid_priority"),
        ("/v1/locations/ok".to_owned(), json!({ "priority": "first" }), "invalid_request"),
        ("/v1/locations/ok".to_owned(), json!({ "name": "no priority" }), "invalid_request"),
        ("/v1/locations/ok".to_owned(), json!({ "priority": 1, "colour": "red" }), "invalid_request"),
        ("/v1/locations/ok".to_owned(), json!({ "name": " ", "priority": 1 }), "invalid_text"),
    ];

    for (path, body, code) in cases {
        let r = app.json("PUT", &path, &body).await;

        assert_eq!((r.status, r.error_code()), (422, code), "PUT {path} {body}: {r:?}");
        assert!(r.body["message"].is_string(), "{r:?}");
    }
    let long_ok = "y".repeat(64);
    let boundary = app.json("PUT", &format!("/v1/locations/{long_ok}"), &json!({ "priority": 1_000_000 })).await;
    assert_eq!(boundary.status, 201, "64 characters and priority 1,000,000 are allowed: {boundary:?}");
    let list = app.get("/v1/locations").await;
    assert_eq!(list.body, json!({ "locations": [{ "location": long_ok, "name": long_ok, "priority": 1_000_000 }] }));
}

async fn stock_shows_every_location_and_the_total_of_the_five_figures(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    app.receive("mug", "a", 10).await;
    app.receive("mug", "b", 5).await;
    let sold = app
        .json("POST", "/v1/reservations", &json!({ "lines": [{ "sku": "mug", "quantity": 3, "location": "a" }] }))
        .await;
    assert_eq!(sold.status, 201, "{sold:?}");
    let id = sold.body["reservation_id"].as_str().expect("reservation_id").to_owned();
    let commit = app.json("POST", &format!("/v1/reservations/{id}/commit"), &json!({})).await;
    assert_eq!(commit.status, 200, "{commit:?}");
    let held = app
        .json("POST", "/v1/reservations", &json!({ "lines": [{ "sku": "mug", "quantity": 2, "location": "b" }] }))
        .await;
    assert_eq!(held.status, 201, "{held:?}");
    let policy = app.json("PUT", "/v1/skus/mug/policy", &json!({ "safety_stock": 1 })).await;
    assert_eq!(policy.status, 200, "{policy:?}");

    let r = app.get("/v1/stock/mug").await;

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["sku"], "mug");
    assert_eq!(r.body["locations"].as_array().map(Vec::len), Some(2), "{}", r.body);
    assert_eq!(*at(&r.body, "a"), figures("a", 10, 0, 3, 1, 6));
    assert_eq!(*at(&r.body, "b"), figures("b", 5, 2, 0, 1, 2));
    assert_eq!(r.body["total"], total(15, 2, 3, 2, 8));
}

async fn stock_of_a_sku_never_stocked_is_404_unknown_sku(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("known", "a", 1).await;

    let r = app.get("/v1/stock/never-seen").await;

    assert_eq!((r.status, r.error_code()), (404, "unknown_sku"), "{r:?}");
    assert!(r.body["message"].is_string(), "{r:?}");
}

async fn stock_of_a_malformed_sku_is_422_invalid_sku(b: Backend) {
    let app = TestApp::spawn(b).await;
    let too_long = "s".repeat(129);

    for path in ["/v1/stock/a%20b".to_owned(), "/v1/stock/%C3%A9".to_owned(), format!("/v1/stock/{too_long}")] {
        let r = app.get(&path).await;

        assert_eq!((r.status, r.error_code()), (422, "invalid_sku"), "GET {path}: {r:?}");
    }
    let longest = "s".repeat(128);
    let r = app.get(&format!("/v1/stock/{longest}")).await;
    assert_eq!((r.status, r.error_code()), (404, "unknown_sku"), "128 characters is a valid sku: {r:?}");
}

async fn stock_of_several_skus_answers_in_the_order_asked_leaving_unknown_ones_out(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("sku-a", "a", 1).await;
    app.receive("sku-b", "a", 2).await;
    app.receive("sku-c", "a", 3).await;

    let r = app.get("/v1/stock?skus=sku-c,ghost,sku-a").await;

    assert_eq!(r.status, 200, "{r:?}");
    let views = r.body.as_array().expect("an array");
    let skus: Vec<&str> = views.iter().map(|v| v["sku"].as_str().unwrap_or_default()).collect();
    assert_eq!(skus, ["sku-c", "sku-a"]);
    assert_eq!(views[0], app.stock("sku-c").await, "the same shape as GET /v1/stock/{{sku}}");
    assert_eq!(views[1], app.stock("sku-a").await);
    assert_eq!(views[0]["total"]["on_hand"], 3);
    assert_eq!(views[1]["total"]["on_hand"], 1);
}

async fn stock_of_more_than_100_skus_at_once_is_refused(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("s-99", "a", 4).await;
    let hundred: Vec<String> = (0..100).map(|i| format!("s-{i}")).collect();
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("s-{i}")).collect();

    let at_most = app.get(&format!("/v1/stock?skus={}", hundred.join(","))).await;
    let too_many = app.get(&format!("/v1/stock?skus={}", hundred_and_one.join(","))).await;
    let none = app.get("/v1/stock").await;

    assert_eq!(at_most.status, 200, "{at_most:?}");
    assert_eq!(at_most.body.as_array().map(Vec::len), Some(1), "{}", at_most.body);
    assert_eq!(at_most.body[0]["sku"], "s-99");
    assert_eq!((too_many.status, too_many.error_code()), (422, "invalid_skus"), "{too_many:?}");
    assert_eq!((none.status, none.error_code()), (422, "invalid_skus"), "{none:?}");
}

async fn safety_stock_reduces_available_at_every_location_and_is_never_held(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    app.receive("lamp", "a", 10).await;
    app.receive("lamp", "b", 4).await;

    let policy = app.json("PUT", "/v1/skus/lamp/policy", &json!({ "safety_stock": 3 })).await;

    assert_eq!(policy.status, 200, "{policy:?}");
    assert_eq!(policy.body, json!({ "sku": "lamp", "low_stock_days": null, "reorder_point": null, "safety_stock": 3 }));
    let stock = app.stock("lamp").await;
    assert_eq!(*at(&stock, "a"), figures("a", 10, 0, 0, 3, 7));
    assert_eq!(*at(&stock, "b"), figures("b", 4, 0, 0, 3, 1));
    assert_eq!(stock["total"], total(14, 0, 0, 6, 8));
    let greedy = app.hold("lamp", 9).await;
    assert_eq!((greedy.status, greedy.error_code()), (409, "insufficient_stock"), "{greedy:?}");
    assert_eq!(greedy.body["shortfalls"], json!([{ "sku": "lamp", "requested": 9, "available": 8 }]));
    let all_but_safety = app.hold("lamp", 8).await;
    assert_eq!(all_but_safety.status, 201, "{all_but_safety:?}");
    assert_eq!(app.stock("lamp").await["total"], total(14, 8, 0, 6, 0));
}

async fn a_policy_update_keeps_the_fields_left_out_and_null_clears_low_stock_days(b: Backend) {
    let app = TestApp::spawn(b).await;
    let path = "/v1/skus/kettle/policy";

    let first = app.json("PUT", path, &json!({ "low_stock_days": 10, "reorder_point": 5, "safety_stock": 2 })).await;
    let second = app.json("PUT", path, &json!({ "reorder_point": 8 })).await;
    let third = app.json("PUT", path, &json!({ "low_stock_days": null })).await;
    let fourth = app.json("PUT", path, &json!({})).await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, json!({ "sku": "kettle", "low_stock_days": 10, "reorder_point": 5, "safety_stock": 2 }));
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body, json!({ "sku": "kettle", "low_stock_days": 10, "reorder_point": 8, "safety_stock": 2 }));
    assert_eq!(third.status, 200, "{third:?}");
    assert_eq!(third.body, json!({ "sku": "kettle", "low_stock_days": null, "reorder_point": 8, "safety_stock": 2 }));
    assert_eq!(fourth.status, 200, "{fourth:?}");
    assert_eq!(fourth.body, third.body, "an empty update changes nothing");
}

async fn a_bad_policy_is_refused_with_422_and_changes_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let path = "/v1/skus/kettle/policy";
    let set = app.json("PUT", path, &json!({ "low_stock_days": 3, "reorder_point": 4, "safety_stock": 5 })).await;
    assert_eq!(set.status, 200, "{set:?}");
    let cases = [
        (path, json!({ "safety_stock": -1 }), "invalid_quantity"),
        (path, json!({ "low_stock_days": 1.5 }), "invalid_quantity"),
        (path, json!({ "reorder_point": -2 }), "invalid_quantity"),
        (path, json!({ "safety_stock": "5" }), "invalid_request"),
        (path, json!({ "max_stock": 100 }), "invalid_request"),
        ("/v1/skus/a%20b/policy", json!({ "safety_stock": 1 }), "invalid_sku"),
    ];

    for (path, body, code) in cases {
        let r = app.json("PUT", path, &body).await;

        assert_eq!((r.status, r.error_code()), (422, code), "PUT {path} {body}: {r:?}");
    }
    let unchanged = app.json("PUT", path, &json!({})).await;
    assert_eq!(unchanged.body, json!({ "sku": "kettle", "low_stock_days": 3, "reorder_point": 4, "safety_stock": 5 }));
}
