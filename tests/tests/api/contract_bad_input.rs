//! Bad input of every kind: each is a 4xx JSON error `{"error", "message"}` (never a 5xx) and changes nothing in
//! the ledger, which each test compares before and after.

use serde_json::{Value, json};
use stockroom_e2e::{Backend, Reply, TestApp};

on_every_store!(
    malformed_json_is_400_malformed_json_and_changes_nothing,
    json_of_the_wrong_shape_is_422_and_changes_nothing,
    a_sku_outside_the_alphabet_or_too_long_is_422_invalid_sku,
    zero_negative_fractional_and_overflowing_quantities_are_422_invalid_quantity,
    an_unknown_reservation_is_404_unknown_reservation,
    a_ttl_outside_1_to_86400_seconds_is_422_invalid_ttl,
    a_body_over_256_kib_is_413_body_too_large,
    deeply_nested_json_is_400_malformed_json_and_the_server_keeps_serving,
    a_body_that_is_not_declared_json_is_415,
    a_bad_idempotency_key_is_400,
    an_unknown_route_is_a_json_404,
    a_wrong_method_is_a_json_405,
    a_key_named_twice_is_400_and_changes_nothing_while_minus_zero_is_zero,
    a_path_that_is_not_utf8_is_a_json_400,
);

/// What a bad request must leave alone.
#[derive(Debug, PartialEq)]
struct Ledger {
    stock: Value,
    reservation: Value,
    locations: Value,
    movements: Vec<Value>,
}

async fn ledger(app: &TestApp) -> Ledger {
    Ledger {
        stock: app.stock("mug").await,
        reservation: app.get("/v1/reservations/r1").await.body,
        locations: app.get("/v1/locations").await.body,
        movements: app.all_movements("").await,
    }
}

/// A location `a` with 10 mugs, 2 of them held by reservation `r1`.
async fn stocked(b: Backend) -> TestApp {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 10).await;
    let r = app
        .json(
            "POST",
            "/v1/reservations",
            &json!({ "reservation_id": "r1", "lines": [{ "sku": "mug", "quantity": 2 }] }),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    app
}

async fn raw(app: &TestApp, method: &str, path: &str, body: impl Into<Vec<u8>>) -> Reply {
    let key = uuid::Uuid::now_v7().to_string();
    let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
    app.send(method, path, &headers, Some(body.into())).await
}

fn assert_refused(r: &Reply, status: u16, code: &str, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: a 4xx, never a 5xx: {r:?}");
    assert_eq!((r.status, r.error_code()), (status, code), "{what}: {r:?}");
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {r:?}");
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{what}: JSON, not {content_type:?}");
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for names in paths.
fn encoded(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn malformed_json_is_400_malformed_json_and_changes_nothing(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let bodies = [r#"{"changes": ["#, "not json", r#"{"lines": []}}"#, "", r#"{"sku": 'mug'}"#, "{\"a\":\"\\u12\"}"];
    let targets = [
        ("POST", "/v1/adjustments"),
        ("POST", "/v1/reservations"),
        ("PUT", "/v1/locations/b"),
        ("PUT", "/v1/skus/mug/policy"),
    ];

    for (method, path) in targets {
        for body in bodies {
            let r = raw(&app, method, path, body).await;

            assert_refused(&r, 400, "malformed_json", &format!("{method} {path} {body:?}"));
        }
    }
    for action in ["commit", "fulfil", "release"] {
        let r = raw(&app, "POST", &format!("/v1/reservations/r1/{action}"), "{").await;
        assert_refused(&r, 400, "malformed_json", action);
    }
    assert_eq!(ledger(&app).await, before);
}

async fn json_of_the_wrong_shape_is_422_and_changes_nothing(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let cases = [
        ("/v1/reservations", json!([]), "invalid_request"),
        ("/v1/reservations", json!({}), "invalid_request"),
        ("/v1/reservations", json!({ "lines": "mug" }), "invalid_request"),
        ("/v1/reservations", json!({ "lines": [{ "sku": "mug" }] }), "invalid_request"),
        ("/v1/reservations", json!({ "lines": [{ "sku": "mug", "quantity": "1" }] }), "invalid_request"),
        ("/v1/reservations", json!({ "lines": [{ "sku": "mug", "quantity": 1, "colour": "red" }] }), "invalid_request"),
        ("/v1/reservations", json!({ "lines": [] }), "invalid_lines"),
        (
            "/v1/reservations",
            json!({ "lines": [{ "sku": "mug", "quantity": 1 }, { "sku": "mug", "quantity": 1 }] }),
            "duplicate_line",
        ),
        ("/v1/adjustments", json!({ "change": [] }), "invalid_request"),
        ("/v1/adjustments", json!({ "changes": {} }), "invalid_request"),
        ("/v1/adjustments", json!(null), "invalid_request"),
    ];

    for (path, body, code) in cases {
        let r = raw(&app, "POST", path, body.to_string()).await;

        assert_refused(&r, 422, code, &format!("POST {path} {body}"));
    }
    let commit = raw(&app, "POST", "/v1/reservations/r1/commit", json!({ "lines": "all" }).to_string()).await;
    assert_refused(&commit, 422, "invalid_request", "commit");
    assert_eq!(ledger(&app).await, before);
}

async fn a_sku_outside_the_alphabet_or_too_long_is_422_invalid_sku(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let too_long = "x".repeat(129);
    let bad = ["a b", "é", too_long.as_str(), "", "mug?", "tab\tmug", "mug\u{0}", "ｍｕｇ"];

    for sku in bad {
        let change = json!({ "changes": [{ "sku": sku, "location": "a", "delta": 1, "reason": "received" }] });
        let adjust = raw(&app, "POST", "/v1/adjustments", change.to_string()).await;
        let line = json!({ "lines": [{ "sku": sku, "quantity": 1 }] });
        let hold = raw(&app, "POST", "/v1/reservations", line.to_string()).await;

        assert_refused(&adjust, 422, "invalid_sku", &format!("adjusting {sku:?}"));
        assert_refused(&hold, 422, "invalid_sku", &format!("holding {sku:?}"));
        if !sku.is_empty() {
            let stock = app.get(&format!("/v1/stock/{}", encoded(sku))).await;
            let policy = raw(&app, "PUT", &format!("/v1/skus/{}/policy", encoded(sku)), r#"{"safety_stock": 1}"#).await;
            assert_refused(&stock, 422, "invalid_sku", &format!("GET stock of {sku:?}"));
            assert_refused(&policy, 422, "invalid_sku", &format!("policy of {sku:?}"));
        }
    }
    let many = app.get(&format!("/v1/stock?skus=mug,{}", encoded("a b"))).await;
    assert_refused(&many, 422, "invalid_sku", "one bad sku among several");
    assert_eq!(ledger(&app).await, before);
    let longest = "x".repeat(128);
    let fine = raw(
        &app,
        "POST",
        "/v1/adjustments",
        json!({ "changes": [{ "sku": longest, "location": "a", "delta": 1, "reason": "received" }] }).to_string(),
    )
    .await;
    assert_eq!(fine.status, 200, "128 characters of the alphabet make a sku: {fine:?}");
    let every_mark = raw(
        &app,
        "POST",
        "/v1/adjustments",
        json!({ "changes": [{ "sku": "A-z_0.9:/x", "location": "a", "delta": 1, "reason": "received" }] }).to_string(),
    )
    .await;
    assert_eq!(every_mark.status, 200, "{every_mark:?}");
}

async fn zero_negative_fractional_and_overflowing_quantities_are_422_invalid_quantity(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let quantities = ["0", "-1", "1.5", "1e30", "9223372036854775808", "-9223372036854775809", "1000000000001", "1.0"];

    for q in quantities {
        let hold =
            raw(&app, "POST", "/v1/reservations", format!(r#"{{"lines":[{{"sku":"mug","quantity":{q}}}]}}"#)).await;
        let commit =
            raw(&app, "POST", "/v1/reservations/r1/commit", format!(r#"{{"lines":[{{"sku":"mug","quantity":{q}}}]}}"#))
                .await;

        assert_refused(&hold, 422, "invalid_quantity", &format!("holding {q}"));
        assert_refused(&commit, 422, "invalid_quantity", &format!("committing {q}"));
    }
    for q in ["0", "1.5", "1e30", "9223372036854775808", "-9223372036854775809", "1000000000001", "-1000000000001"] {
        let body = format!(r#"{{"changes":[{{"sku":"mug","location":"a","delta":{q},"reason":"received"}}]}}"#);
        let r = raw(&app, "POST", "/v1/adjustments", body).await;
        assert_refused(&r, 422, "invalid_quantity", &format!("delta {q}"));
    }
    for q in ["-1", "1.5", "1e30", "9223372036854775808", "1000000000001"] {
        let body = format!(r#"{{"changes":[{{"sku":"mug","location":"a","set":{q},"reason":"count"}}]}}"#);
        let r = raw(&app, "POST", "/v1/adjustments", body).await;
        assert_refused(&r, 422, "invalid_quantity", &format!("set {q}"));
    }
    assert_eq!(ledger(&app).await, before);
}

async fn an_unknown_reservation_is_404_unknown_reservation(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;

    let read = app.get("/v1/reservations/r2").await;

    assert_refused(&read, 404, "unknown_reservation", "GET");
    for action in ["commit", "fulfil", "release"] {
        let empty = app.send("POST", &format!("/v1/reservations/r2/{action}"), &[], None).await;
        let with_body = raw(&app, "POST", &format!("/v1/reservations/r2/{action}"), "{}").await;
        assert_refused(&empty, 404, "unknown_reservation", action);
        assert_refused(&with_body, 404, "unknown_reservation", action);
    }
    assert_eq!(ledger(&app).await, before);
}

async fn a_ttl_outside_1_to_86400_seconds_is_422_invalid_ttl(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;

    for ttl in ["0", "86401", "-5", "1.5", "1e30", "9223372036854775808"] {
        let body = format!(r#"{{"lines":[{{"sku":"mug","quantity":1}}],"ttl_seconds":{ttl}}}"#);
        let r = raw(&app, "POST", "/v1/reservations", body).await;

        assert_refused(&r, 422, "invalid_ttl", &format!("ttl_seconds {ttl}"));
    }
    assert_eq!(ledger(&app).await, before);
    for ttl in [1, 86_400] {
        let r = raw(
            &app,
            "POST",
            "/v1/reservations",
            json!({ "lines": [{ "sku": "mug", "quantity": 1 }], "ttl_seconds": ttl }).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "ttl_seconds {ttl} is allowed: {r:?}");
    }
}

async fn a_body_over_256_kib_is_413_body_too_large(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let filler = "x".repeat(300 * 1024);
    let adjustment = json!({ "changes": [{ "sku": "mug", "location": "a", "delta": 1, "reason": filler }] });
    let hold = json!({ "lines": [{ "sku": "mug", "quantity": 1 }], "reference": filler });

    let r1 = raw(&app, "POST", "/v1/adjustments", adjustment.to_string()).await;
    let r2 = raw(&app, "POST", "/v1/reservations", hold.to_string()).await;
    let r3 = raw(&app, "PUT", "/v1/locations/b", json!({ "name": filler, "priority": 1 }).to_string()).await;
    let r4 = raw(&app, "POST", "/v1/reservations/r1/commit", json!({ "pad": filler }).to_string()).await;

    assert_refused(&r1, 413, "body_too_large", "adjustment");
    assert_refused(&r2, 413, "body_too_large", "reservation");
    assert_refused(&r3, 413, "body_too_large", "location");
    assert_refused(&r4, 413, "body_too_large", "commit");
    assert_eq!(ledger(&app).await, before);
}

async fn deeply_nested_json_is_400_malformed_json_and_the_server_keeps_serving(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let arrays = "[".repeat(100_000);
    let objects = format!("{}1{}", r#"{"a":"#.repeat(40_000), "}".repeat(40_000));
    let in_a_line = format!(r#"{{"lines":[{{"sku":"mug","quantity":1,"location":{}}}]}}"#, "[".repeat(100_000));

    for (what, body) in [("arrays", &arrays), ("objects", &objects), ("inside a line", &in_a_line)] {
        for (method, path) in
            [("POST", "/v1/reservations"), ("POST", "/v1/adjustments"), ("POST", "/v1/reservations/r1/commit")]
        {
            let r = raw(&app, method, path, body.as_bytes()).await;

            assert_refused(&r, 400, "malformed_json", &format!("{what} to {path}"));
        }
    }
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(ledger(&app).await, before);
}

async fn a_body_that_is_not_declared_json_is_415(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let adjustment = json!({ "changes": [{ "sku": "mug", "location": "a", "delta": 1, "reason": "received" }] });
    let hold = json!({ "lines": [{ "sku": "mug", "quantity": 1 }] });
    let cases = [
        ("POST", "/v1/adjustments", adjustment.to_string()),
        ("POST", "/v1/reservations", hold.to_string()),
        ("PUT", "/v1/locations/b", json!({ "priority": 1 }).to_string()),
        ("PUT", "/v1/skus/mug/policy", json!({ "safety_stock": 1 }).to_string()),
    ];

    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        for (method, path, body) in &cases {
            let headers = [("content-type", content_type), ("idempotency-key", "k-415")];
            let r = app.send(method, path, &headers, Some(body.clone().into_bytes())).await;

            assert_refused(&r, 415, "unsupported_media_type", &format!("{method} {path} as {content_type}"));
        }
    }
    assert_eq!(ledger(&app).await, before);
}

async fn a_bad_idempotency_key_is_400(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    let body = json!({ "changes": [{ "sku": "mug", "location": "a", "delta": 1, "reason": "received" }] }).to_string();
    let too_long = "k".repeat(256);

    for key in [too_long.as_str(), "with space", ""] {
        let headers = [("content-type", "application/json"), ("idempotency-key", key)];
        let r = app.send("POST", "/v1/adjustments", &headers, Some(body.clone().into_bytes())).await;

        assert_refused(&r, 400, "invalid_idempotency_key", &format!("key {key:?}"));
    }
    // A hold with its own reservation_id is keyed by that id, and a bad header is still refused.
    let hold = json!({ "reservation_id": "r-bad-key", "lines": [{ "sku": "mug", "quantity": 1 }] }).to_string();
    let headers = [("content-type", "application/json"), ("idempotency-key", "with space")];
    let r = app.send("POST", "/v1/reservations", &headers, Some(hold.into_bytes())).await;
    assert_refused(&r, 400, "invalid_idempotency_key", "a hold with a reservation_id");
    assert_eq!(ledger(&app).await, before);
}

async fn an_unknown_route_is_a_json_404(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;

    for (method, path) in [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/reservation"),
        ("GET", "/v2/stock/mug"),
        ("POST", "/v1/reservations/r1/ship"),
        ("GET", "/v1/stock/mug/extra"),
    ] {
        let r = raw(&app, method, path, "{}").await;

        assert_refused(&r, 404, "not_found", &format!("{method} {path}"));
    }
    assert_eq!(ledger(&app).await, before);
}

async fn a_wrong_method_is_a_json_405(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;

    for (method, path) in [
        ("DELETE", "/v1/stock/mug"),
        ("GET", "/v1/adjustments"),
        ("PUT", "/v1/reservations"),
        ("POST", "/v1/locations"),
        ("DELETE", "/v1/reservations/r1"),
        ("GET", "/v1/reservations/r1/commit"),
        ("PATCH", "/v1/skus/mug/policy"),
    ] {
        let r = raw(&app, method, path, "{}").await;

        assert_refused(&r, 405, "method_not_allowed", &format!("{method} {path}"));
    }
    assert_eq!(ledger(&app).await, before);
}

async fn a_key_named_twice_is_400_and_changes_nothing_while_minus_zero_is_zero(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    // serde_json alone would hold 5 here (the last value wins), while a proxy reading the first sees 1.
    let twice = [
        ("POST", "/v1/reservations", r#"{"lines":[{"sku":"mug","quantity":1,"quantity":5}]}"#),
        (
            "POST",
            "/v1/reservations",
            r#"{"reservation_id":"r2","reservation_id":"r3","lines":[{"sku":"mug","quantity":1}]}"#,
        ),
        ("POST", "/v1/adjustments", r#"{"changes":[{"sku":"mug","location":"a","delta":1,"delta":9,"reason":"x"}]}"#),
        ("PUT", "/v1/locations/b", r#"{"priority":1,"priority":2}"#),
        ("PUT", "/v1/skus/mug/policy", r#"{"safety_stock":1,"safety_stock":3}"#),
        ("POST", "/v1/reservations/r1/commit", r#"{"lines":[{"sku":"mug","quantity":1}],"lines":[]}"#),
    ];
    for (method, path, body) in twice {
        let r = raw(&app, method, path, body).await;
        assert_refused(&r, 400, "malformed_json", &format!("{method} {path} {body}"));
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("twice")), "{body}: says why: {r:?}");
    }
    assert_eq!(ledger(&app).await, before);

    // `-0` is taken where `0` is.
    let r = raw(&app, "PUT", "/v1/skus/mug/policy", r#"{"safety_stock":-0}"#).await;
    assert_eq!((r.status, &r.body["safety_stock"]), (200, &json!(0)), "{r:?}");
    let r =
        raw(&app, "POST", "/v1/adjustments", r#"{"changes":[{"sku":"cup","location":"a","set":-0,"reason":"count"}]}"#)
            .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.stock("cup").await["total"]["on_hand"], 0);
}

async fn a_path_that_is_not_utf8_is_a_json_400(b: Backend) {
    let app = stocked(b).await;
    let before = ledger(&app).await;
    for (method, path) in [
        ("GET", "/v1/stock/%FF"),
        ("GET", "/v1/reservations/%C3%28"),
        ("POST", "/v1/reservations/%FF/release"),
        ("PUT", "/v1/locations/%FE"),
        ("GET", "/v1/analytics/skus/%FF/sales"),
    ] {
        let r = raw(&app, method, path, "{}").await;
        assert_refused(&r, 400, "invalid_path", &format!("{method} {path}"));
    }
    assert_eq!(ledger(&app).await, before);
}
