//! The contract's adjustments and ledger: `POST /v1/adjustments` (delta, set, atomic batches, compare-and-set,
//! idempotency) and `GET /v1/movements` (order, filters, paging).

use serde_json::{Value, json};
use stockroom_e2e::{Backend, Reply, TestApp};

on_every_store!(
    a_delta_adds_to_on_hand_and_answers_the_new_levels,
    a_set_makes_on_hand_exactly_the_count,
    a_batch_applies_every_change_in_one_go,
    a_batch_with_one_change_taking_on_hand_negative_applies_nothing,
    a_batch_with_one_change_at_an_unknown_location_applies_nothing,
    a_batch_with_one_invalid_change_applies_nothing,
    an_expected_on_hand_that_differs_is_409_on_hand_mismatch_and_changes_nothing,
    an_expected_on_hand_that_matches_lets_the_change_through,
    the_same_idempotency_key_and_body_answers_the_same_and_applies_once,
    the_same_idempotency_key_with_another_body_is_422_idempotency_mismatch,
    an_adjustment_without_an_idempotency_key_is_400_and_applies_nothing,
    movements_come_oldest_first_with_their_deltas_reason_and_reference,
    movements_filter_by_sku_and_by_location,
    movements_page_through_next_and_after,
    a_movement_limit_outside_1_to_1000_is_400_invalid_limit,
);

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn adjust(app: &TestApp, key: &str, changes: Value) -> Reply {
    app.json_with_key("POST", "/v1/adjustments", key, &json!({ "changes": changes })).await
}

fn level(sku: &str, location: &str, on_hand: i64) -> Value {
    json!({ "sku": sku, "location": location, "on_hand": on_hand, "reserved": 0, "committed": 0,
            "safety_stock": 0, "available": on_hand })
}

/// `on_hand` of one sku at one location, from `GET /v1/stock/{sku}`.
async fn on_hand(app: &TestApp, sku: &str, location: &str) -> i64 {
    let stock = app.stock(sku).await;
    stock["locations"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["location"] == location))
        .and_then(|l| l["on_hand"].as_i64())
        .unwrap_or_else(|| panic!("no {location} in {stock}"))
}

fn on_hand_deltas(movements: &[Value]) -> Vec<i64> {
    movements.iter().map(|m| m["on_hand_delta"].as_i64().unwrap_or(i64::MIN)).collect()
}

async fn a_delta_adds_to_on_hand_and_answers_the_new_levels(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    let (first, second) = (key(), key());

    let received = adjust(
        &app,
        &first,
        json!([{ "sku": "mug", "location": "a", "delta": 7, "reason": "received", "reference": "PO-1" }]),
    )
    .await;
    let damaged =
        adjust(&app, &second, json!([{ "sku": "mug", "location": "a", "delta": -2, "reason": "damaged" }])).await;

    assert_eq!(received.status, 200, "{received:?}");
    assert_eq!(received.body, json!({ "levels": [level("mug", "a", 7)] }));
    assert_eq!(damaged.status, 200, "{damaged:?}");
    assert_eq!(damaged.body, json!({ "levels": [level("mug", "a", 5)] }));
    assert_eq!(on_hand(&app, "mug", "a").await, 5);
    let movements = app.all_movements("&sku=mug").await;
    assert_eq!(movements.len(), 2, "{movements:?}");
    let m = &movements[0];
    assert_eq!(
        (m["sku"].as_str(), m["location"].as_str(), m["kind"].as_str()),
        (Some("mug"), Some("a"), Some("adjustment"))
    );
    assert_eq!(
        (m["on_hand_delta"].as_i64(), m["reserved_delta"].as_i64(), m["committed_delta"].as_i64()),
        (Some(7), Some(0), Some(0))
    );
    assert_eq!((m["reason"].as_str(), m["reference"].as_str()), (Some("received"), Some("PO-1")));
    assert_eq!(m["cause"], format!("adjustment:{first}"));
    assert_eq!(movements[1]["on_hand_delta"], -2);
    assert_eq!(movements[1]["reason"], "damaged");
    assert_eq!(movements[1]["reference"], Value::Null);
}

async fn a_set_makes_on_hand_exactly_the_count(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 5).await;

    let up = adjust(&app, &key(), json!([{ "sku": "mug", "location": "a", "set": 12, "reason": "count" }])).await;
    let down = adjust(&app, &key(), json!([{ "sku": "mug", "location": "a", "set": 3, "reason": "count" }])).await;
    let same = adjust(&app, &key(), json!([{ "sku": "mug", "location": "a", "set": 3, "reason": "count" }])).await;
    let zero = adjust(&app, &key(), json!([{ "sku": "mug", "location": "a", "set": 0, "reason": "count" }])).await;

    assert_eq!((up.status, &up.body), (200, &json!({ "levels": [level("mug", "a", 12)] })), "{up:?}");
    assert_eq!((down.status, &down.body), (200, &json!({ "levels": [level("mug", "a", 3)] })), "{down:?}");
    assert_eq!((same.status, &same.body), (200, &json!({ "levels": [level("mug", "a", 3)] })), "{same:?}");
    assert_eq!((zero.status, &zero.body), (200, &json!({ "levels": [level("mug", "a", 0)] })), "{zero:?}");
    let movements = app.all_movements("&sku=mug").await;
    assert_eq!(on_hand_deltas(&movements), [5, 7, -9, -3], "a count that finds what the ledger says books nothing");
}

async fn a_batch_applies_every_change_in_one_go(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;

    let r = adjust(
        &app,
        &key(),
        json!([
            { "sku": "mug", "location": "a", "delta": 4, "reason": "received" },
            { "sku": "mug", "location": "b", "set": 6, "reason": "count" },
            { "sku": "cup", "location": "a", "delta": 9, "reason": "received" },
            { "sku": "mug", "location": "a", "delta": -1, "reason": "damaged" },
        ]),
    )
    .await;

    assert_eq!(r.status, 200, "{r:?}");
    let mut levels = r.body["levels"].as_array().cloned().expect("levels");
    levels.sort_by_key(|l| (l["sku"].to_string(), l["location"].to_string()));
    assert_eq!(levels, [level("cup", "a", 9), level("mug", "a", 3), level("mug", "b", 6)]);
    assert_eq!(on_hand(&app, "mug", "a").await, 3);
    assert_eq!(on_hand(&app, "mug", "b").await, 6);
    assert_eq!(on_hand(&app, "cup", "a").await, 9);
    assert_eq!(app.all_movements("").await.len(), 4);
}

async fn a_batch_with_one_change_taking_on_hand_negative_applies_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    app.receive("mug", "a", 5).await;
    let stock_before = app.stock("mug").await;
    let movements_before = app.all_movements("").await;

    let r = adjust(
        &app,
        &key(),
        json!([
            { "sku": "mug", "location": "a", "delta": 3, "reason": "received" },
            { "sku": "cup", "location": "b", "delta": 4, "reason": "received" },
            { "sku": "mug", "location": "a", "delta": -20, "reason": "lost" },
        ]),
    )
    .await;

    assert_eq!((r.status, r.error_code()), (422, "negative_on_hand"), "{r:?}");
    assert_eq!((&r.body["sku"], &r.body["location"], &r.body["would_be"]), (&json!("mug"), &json!("a"), &json!(-12)));
    assert!(r.body["message"].is_string(), "{r:?}");
    assert_eq!(app.stock("mug").await, stock_before);
    let cup = app.get("/v1/stock/cup").await;
    assert_eq!((cup.status, cup.error_code()), (404, "unknown_sku"), "the first changes were not kept: {cup:?}");
    assert_eq!(app.all_movements("").await, movements_before);
}

async fn a_batch_with_one_change_at_an_unknown_location_applies_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 5).await;
    let movements_before = app.all_movements("").await;

    let r = adjust(
        &app,
        &key(),
        json!([
            { "sku": "mug", "location": "a", "delta": 3, "reason": "received" },
            { "sku": "mug", "location": "nowhere", "delta": 1, "reason": "received" },
        ]),
    )
    .await;

    assert_eq!((r.status, r.error_code()), (422, "unknown_location"), "{r:?}");
    assert_eq!(r.body["location"], "nowhere");
    assert_eq!(on_hand(&app, "mug", "a").await, 5);
    assert_eq!(app.stock("mug").await["locations"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.all_movements("").await, movements_before);
}

async fn a_batch_with_one_invalid_change_applies_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 5).await;
    let good = json!({ "sku": "mug", "location": "a", "delta": 3, "reason": "received" });
    let cases = [
        (json!({ "sku": "bad sku", "location": "a", "delta": 1, "reason": "received" }), "invalid_sku"),
        (json!({ "sku": "mug", "location": "a", "delta": 0, "reason": "received" }), "invalid_quantity"),
        (json!({ "sku": "mug", "location": "a", "set": -1, "reason": "count" }), "invalid_quantity"),
        (json!({ "sku": "mug", "location": "a", "delta": 1, "set": 2, "reason": "both" }), "invalid_change"),
        (json!({ "sku": "mug", "location": "a", "reason": "neither" }), "invalid_change"),
        (json!({ "sku": "mug", "location": "a", "delta": 1 }), "invalid_request"),
        (json!({ "sku": "mug", "location": "a", "delta": 1, "reason": "" }), "invalid_text"),
    ];

    for (bad, code) in cases {
        let r = adjust(&app, &key(), json!([good.clone(), bad.clone()])).await;

        assert_eq!((r.status, r.error_code()), (422, code), "{bad}: {r:?}");
    }
    let empty = adjust(&app, &key(), json!([])).await;
    assert_eq!((empty.status, empty.error_code()), (422, "invalid_changes"), "{empty:?}");
    assert_eq!(on_hand(&app, "mug", "a").await, 5);
    assert_eq!(app.all_movements("").await.len(), 1);
}

async fn an_expected_on_hand_that_differs_is_409_on_hand_mismatch_and_changes_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 10).await;
    let movements_before = app.all_movements("").await;

    let r = adjust(
        &app,
        &key(),
        json!([
            { "sku": "cup", "location": "a", "delta": 5, "reason": "received" },
            { "sku": "mug", "location": "a", "set": 8, "expected_on_hand": 9, "reason": "count" },
        ]),
    )
    .await;

    assert_eq!((r.status, r.error_code()), (409, "on_hand_mismatch"), "{r:?}");
    assert_eq!((&r.body["expected_on_hand"], &r.body["actual_on_hand"]), (&json!(9), &json!(10)), "{r:?}");
    assert_eq!((&r.body["sku"], &r.body["location"]), (&json!("mug"), &json!("a")));
    assert_eq!(on_hand(&app, "mug", "a").await, 10);
    assert_eq!(app.get("/v1/stock/cup").await.status, 404, "the other change in the batch was not kept");
    assert_eq!(app.all_movements("").await, movements_before);
}

async fn an_expected_on_hand_that_matches_lets_the_change_through(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 10).await;

    let set = adjust(
        &app,
        &key(),
        json!([{ "sku": "mug", "location": "a", "set": 8, "expected_on_hand": 10, "reason": "count" }]),
    )
    .await;
    let delta = adjust(
        &app,
        &key(),
        json!([{ "sku": "mug", "location": "a", "delta": -3, "expected_on_hand": 8, "reason": "sold" }]),
    )
    .await;
    let fresh = adjust(
        &app,
        &key(),
        json!([{ "sku": "new", "location": "a", "delta": 2, "expected_on_hand": 0, "reason": "first" }]),
    )
    .await;

    assert_eq!((set.status, &set.body), (200, &json!({ "levels": [level("mug", "a", 8)] })), "{set:?}");
    assert_eq!((delta.status, &delta.body), (200, &json!({ "levels": [level("mug", "a", 5)] })), "{delta:?}");
    assert_eq!((fresh.status, &fresh.body), (200, &json!({ "levels": [level("new", "a", 2)] })), "{fresh:?}");
}

async fn the_same_idempotency_key_and_body_answers_the_same_and_applies_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    let k = key();
    let changes = json!([{ "sku": "mug", "location": "a", "delta": 5, "reason": "received" }]);

    let first = adjust(&app, &k, changes.clone()).await;
    let again = adjust(&app, &k, changes.clone()).await;
    let third = adjust(&app, &k, changes).await;

    assert_eq!((first.status, &first.body), (200, &json!({ "levels": [level("mug", "a", 5)] })), "{first:?}");
    assert!(first.headers.get("idempotent-replayed").is_none(), "{first:?}");
    for replay in [again, third] {
        assert_eq!((replay.status, &replay.body), (200, &first.body), "{replay:?}");
        assert_eq!(replay.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    }
    assert_eq!(on_hand(&app, "mug", "a").await, 5);
    assert_eq!(app.all_movements("").await.len(), 1);
}

async fn the_same_idempotency_key_with_another_body_is_422_idempotency_mismatch(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    let k = key();

    let first = adjust(&app, &k, json!([{ "sku": "mug", "location": "a", "delta": 5, "reason": "received" }])).await;
    let other = adjust(&app, &k, json!([{ "sku": "mug", "location": "a", "delta": 6, "reason": "received" }])).await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!((other.status, other.error_code()), (422, "idempotency_mismatch"), "{other:?}");
    assert!(other.body["message"].is_string());
    assert_eq!(on_hand(&app, "mug", "a").await, 5);
    assert_eq!(app.all_movements("").await.len(), 1);
}

async fn an_adjustment_without_an_idempotency_key_is_400_and_applies_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    let body = json!({ "changes": [{ "sku": "mug", "location": "a", "delta": 5, "reason": "received" }] });

    let r = app.json("POST", "/v1/adjustments", &body).await;

    assert_eq!((r.status, r.error_code()), (400, "idempotency_key_required"), "{r:?}");
    assert_eq!(app.get("/v1/stock/mug").await.status, 404);
    assert!(app.all_movements("").await.is_empty());
}

async fn movements_come_oldest_first_with_their_deltas_reason_and_reference(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    for (sku, location, delta) in [("s1", "a", 1), ("s2", "a", 2), ("s1", "b", 3), ("s2", "b", 4)] {
        app.receive(sku, location, delta).await;
    }

    let r = app.get("/v1/movements").await;

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["next"], Value::Null);
    let movements = r.body["movements"].as_array().cloned().expect("movements");
    assert_eq!(on_hand_deltas(&movements), [1, 2, 3, 4]);
    let ids: Vec<&str> = movements.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = movements
        .iter()
        .map(|m| chrono::DateTime::parse_from_rfc3339(m["at"].as_str().expect("at")).expect("RFC 3339"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    assert!(times.iter().all(|t| t.offset().local_minus_utc() == 0), "UTC: {times:?}");
    for m in &movements {
        for field in ["id", "at", "sku", "location", "kind", "reason", "reference", "cause"] {
            assert!(m.get(field).is_some(), "{field} missing from {m}");
        }
        assert_eq!(m["kind"], "adjustment");
        assert_eq!(m["reason"], "received");
    }
}

async fn movements_filter_by_sku_and_by_location(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    for (sku, location, delta) in [("s1", "a", 1), ("s2", "a", 2), ("s1", "b", 3), ("s2", "b", 4)] {
        app.receive(sku, location, delta).await;
    }

    let by_sku = app.get("/v1/movements?sku=s1").await;
    let by_location = app.get("/v1/movements?location=b").await;
    let by_both = app.get("/v1/movements?sku=s2&location=a").await;
    let by_nothing_known = app.get("/v1/movements?sku=ghost").await;

    let deltas = |r: &Reply| on_hand_deltas(r.body["movements"].as_array().expect("movements"));
    assert_eq!(deltas(&by_sku), [1, 3]);
    assert_eq!(deltas(&by_location), [3, 4]);
    assert_eq!(deltas(&by_both), [2]);
    assert_eq!(by_nothing_known.body, json!({ "movements": [], "next": null }));
    let bad = app.get("/v1/movements?sku=a%20b").await;
    assert_eq!((bad.status, bad.error_code()), (422, "invalid_sku"), "{bad:?}");
}

async fn movements_page_through_next_and_after(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    for delta in 1..=5 {
        app.receive("mug", "a", delta).await;
    }
    let everything = app.get("/v1/movements?limit=5").await;
    assert_eq!(everything.body["next"], Value::Null, "a page that ends the ledger has no next: {everything:?}");
    let all = everything.body["movements"].as_array().cloned().expect("movements");

    let first = app.get("/v1/movements?limit=2").await;
    let next = first.body["next"].as_str().expect("a next cursor").to_owned();
    let second = app.get(&format!("/v1/movements?limit=2&after={next}")).await;
    let next = second.body["next"].as_str().expect("a next cursor").to_owned();
    let third = app.get(&format!("/v1/movements?limit=2&after={next}")).await;

    assert_eq!(on_hand_deltas(first.body["movements"].as_array().expect("page")), [1, 2]);
    assert_eq!(first.body["next"], all[1]["id"]);
    assert_eq!(on_hand_deltas(second.body["movements"].as_array().expect("page")), [3, 4]);
    assert_eq!(second.body["next"], all[3]["id"]);
    assert_eq!(on_hand_deltas(third.body["movements"].as_array().expect("page")), [5]);
    assert_eq!(third.body["next"], Value::Null);
    let filtered =
        app.get(&format!("/v1/movements?sku=mug&limit=10&after={}", all[2]["id"].as_str().unwrap_or_default())).await;
    assert_eq!(on_hand_deltas(filtered.body["movements"].as_array().expect("page")), [4, 5]);
}

async fn a_movement_limit_outside_1_to_1000_is_400_invalid_limit(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.receive("mug", "a", 1).await;
    app.receive("mug", "a", 2).await;

    for limit in ["0", "-1", "1001", "1000000"] {
        let r = app.get(&format!("/v1/movements?limit={limit}")).await;

        assert_eq!((r.status, r.error_code()), (400, "invalid_limit"), "limit={limit}: {r:?}");
        assert!(r.body["message"].is_string());
    }
    let one = app.get("/v1/movements?limit=1").await;
    assert_eq!((one.status, one.body["movements"].as_array().map(Vec::len)), (200, Some(1)), "{one:?}");
    let most = app.get("/v1/movements?limit=1000").await;
    assert_eq!((most.status, most.body["movements"].as_array().map(Vec::len)), (200, Some(2)), "{most:?}");
    let words = app.get("/v1/movements?limit=many").await;
    assert_eq!((words.status, words.error_code()), (400, "invalid_query"), "{words:?}");
}
