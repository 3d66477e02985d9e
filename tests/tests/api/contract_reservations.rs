//! The contract's reservations: holds with sourcing and all-or-nothing lines, their idempotency, the states a
//! reservation goes through (commit, fulfil, release), and expiry at read time and by the job.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use stockroom_e2e::{Backend, Reply, TestApp};

on_every_store!(
    holding_stock_answers_201_with_the_reservation,
    a_hold_without_ttl_lives_900_seconds,
    a_line_without_location_is_sourced_by_priority_and_split_across_locations,
    a_line_with_a_location_holds_only_there,
    holding_more_than_available_is_409_with_shortfalls_and_holds_nothing,
    the_same_reservation_id_and_body_answers_the_first_answer_again,
    the_same_reservation_id_with_another_body_is_422_idempotency_mismatch,
    an_unknown_reservation_is_404_unknown_reservation,
    committing_a_hold_sells_everything_held,
    a_partial_commit_sells_what_is_listed_and_releases_the_rest,
    a_partial_commit_draws_from_allocations_in_sourcing_order,
    a_commit_of_lines_the_hold_does_not_have_is_refused_and_keeps_the_hold,
    committing_an_expired_hold_is_410_reservation_expired,
    fulfilling_a_sale_takes_it_off_on_hand,
    fulfilling_what_is_not_committed_is_409_invalid_state,
    releasing_a_hold_gives_the_stock_back_and_again_changes_nothing,
    releasing_a_sale_returns_the_stock,
    releasing_a_fulfilled_reservation_is_409_invalid_state,
    a_hold_past_its_expiry_stops_counting_at_read_time_without_any_job,
    the_expire_job_books_lapsed_holds_once,
    an_idempotency_key_on_commit_replays_the_answer_without_committing_twice,
    an_idempotency_key_on_a_hold_replays_the_answer_without_holding_twice,
    the_same_reservation_id_answers_as_the_first_time_whatever_idempotency_key_comes_with_it,
    an_idempotency_key_on_the_expire_job_answers_the_first_summary_again,
);

async fn reserve(app: &TestApp, body: Value) -> Reply {
    app.json("POST", "/v1/reservations", &body).await
}

/// A step (`commit`, `fulfil`, `release`) with no body.
async fn step(app: &TestApp, id: &str, action: &str) -> Reply {
    app.send("POST", &format!("/v1/reservations/{id}/{action}"), &[], None).await
}

fn id_of(r: &Reply) -> String {
    assert_eq!(r.status, 201, "{r:?}");
    r.body["reservation_id"].as_str().expect("reservation_id").to_owned()
}

/// (location, quantity) of each allocation of line `n`.
fn allocations(reservation: &Value, n: usize) -> Vec<(String, i64)> {
    reservation["lines"][n]["allocations"]
        .as_array()
        .expect("allocations")
        .iter()
        .map(|a| (a["location"].as_str().unwrap_or_default().to_owned(), a["quantity"].as_i64().unwrap_or(-1)))
        .collect()
}

fn allocs(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(l, q)| ((*l).to_owned(), *q)).collect()
}

/// `[on_hand, reserved, committed, available]` of one sku at one location.
async fn figures(app: &TestApp, sku: &str, location: &str) -> [i64; 4] {
    let stock = app.stock(sku).await;
    let at = stock["locations"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["location"] == location))
        .unwrap_or_else(|| panic!("no {location} in {stock}"));
    ["on_hand", "reserved", "committed", "available"].map(|f| at[f].as_i64().unwrap_or(i64::MIN))
}

/// Levels are a pure function of the movements: every location's figures replayed from the ledger equal the
/// stored ones (call only when no hold has lapsed unbooked).
async fn assert_ledger_replays(app: &TestApp, sku: &str) {
    let mut replayed: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for m in app.all_movements(&format!("&sku={sku}")).await {
        let e = replayed.entry(m["location"].as_str().unwrap_or_default().to_owned()).or_default();
        e[0] += m["on_hand_delta"].as_i64().unwrap_or(0);
        e[1] += m["reserved_delta"].as_i64().unwrap_or(0);
        e[2] += m["committed_delta"].as_i64().unwrap_or(0);
    }
    let stock = app.stock(sku).await;
    let stored: BTreeMap<String, [i64; 3]> = stock["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| {
            let f = |k: &str| l[k].as_i64().unwrap_or(i64::MIN);
            (l["location"].as_str().unwrap_or_default().to_owned(), [f("on_hand"), f("reserved"), f("committed")])
        })
        .collect();
    assert_eq!(replayed, stored, "the ledger of {sku} replays to its levels");
}

async fn with_stock(b: Backend, stock: &[(&str, &str, i64)]) -> TestApp {
    let app = TestApp::spawn(b).await;
    let mut locations: Vec<&str> = Vec::new();
    for (_, location, _) in stock {
        if !locations.contains(location) {
            locations.push(location);
        }
    }
    for (priority, location) in locations.iter().enumerate() {
        app.location(location, priority as i64 + 1).await;
    }
    for (sku, location, units) in stock {
        app.receive(sku, location, *units).await;
    }
    app
}

fn replayed(r: &Reply) -> bool {
    r.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()) == Some("true")
}

async fn holding_stock_answers_201_with_the_reservation(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let before = chrono::Utc::now();

    let r = reserve(
        &app,
        json!({ "lines": [{ "sku": "mug", "quantity": 3 }], "ttl_seconds": 600, "reference": "order-1" }),
    )
    .await;

    let after = chrono::Utc::now();
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["reservation_id"].as_str().expect("a reservation_id");
    assert!(!id.is_empty());
    assert_eq!(r.body["status"], "held");
    let expires =
        chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().expect("expires_at")).expect("RFC 3339");
    assert_eq!(expires.offset().local_minus_utc(), 0, "UTC");
    let ttl = chrono::Duration::seconds(600);
    let slack = chrono::Duration::seconds(2);
    assert!(expires >= before + ttl - slack && expires <= after + ttl + slack, "expires_at {expires} is now + 600 s");
    assert_eq!(r.body["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!((&r.body["lines"][0]["sku"], &r.body["lines"][0]["quantity"]), (&json!("mug"), &json!(3)));
    assert_eq!(allocations(&r.body, 0), allocs(&[("a", 3)]));
    assert_eq!(figures(&app, "mug", "a").await, [10, 3, 0, 7]);
    let read = app.get(&format!("/v1/reservations/{id}")).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body, r.body, "reading it back gives the same reservation");
    assert_ledger_replays(&app, "mug").await;
}

async fn a_hold_without_ttl_lives_900_seconds(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let before = chrono::Utc::now();

    let r = app.hold("mug", 1).await;

    let after = chrono::Utc::now();
    assert_eq!(r.status, 201, "{r:?}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().expect("expires_at")).expect("RFC 3339");
    let ttl = chrono::Duration::seconds(900);
    let slack = chrono::Duration::seconds(2);
    assert!(expires >= before + ttl - slack && expires <= after + ttl + slack, "expires_at {expires} is now + 900 s");
}

async fn a_line_without_location_is_sourced_by_priority_and_split_across_locations(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("north", 2).await;
    app.location("south", 1).await;
    app.location("west", 3).await;
    app.receive("mug", "north", 4).await;
    app.receive("mug", "south", 3).await;
    app.receive("mug", "west", 10).await;

    let small = app.hold("mug", 2).await;
    let split = app.hold("mug", 7).await;

    assert_eq!(small.status, 201, "{small:?}");
    assert_eq!(allocations(&small.body, 0), allocs(&[("south", 2)]), "lowest priority number first");
    assert_eq!(split.status, 201, "{split:?}");
    assert_eq!(allocations(&split.body, 0), allocs(&[("south", 1), ("north", 4), ("west", 2)]));
    assert_eq!(figures(&app, "mug", "south").await, [3, 3, 0, 0]);
    assert_eq!(figures(&app, "mug", "north").await, [4, 4, 0, 0]);
    assert_eq!(figures(&app, "mug", "west").await, [10, 2, 0, 8]);
    assert_ledger_replays(&app, "mug").await;
}

async fn a_line_with_a_location_holds_only_there(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 5), ("mug", "b", 5)]).await;

    let there = reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 4, "location": "b" }] })).await;
    let too_much = reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 2, "location": "b" }] })).await;
    let nowhere = reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 1, "location": "c" }] })).await;

    assert_eq!(there.status, 201, "{there:?}");
    assert_eq!(allocations(&there.body, 0), allocs(&[("b", 4)]));
    assert_eq!((too_much.status, too_much.error_code()), (409, "insufficient_stock"), "{too_much:?}");
    assert_eq!(too_much.body["shortfalls"], json!([{ "sku": "mug", "requested": 2, "available": 1 }]));
    assert_eq!((nowhere.status, nowhere.error_code()), (422, "unknown_location"), "{nowhere:?}");
    assert_eq!(figures(&app, "mug", "a").await, [5, 0, 0, 5]);
    assert_eq!(figures(&app, "mug", "b").await, [5, 4, 0, 1]);
}

async fn holding_more_than_available_is_409_with_shortfalls_and_holds_nothing(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10), ("cup", "a", 2), ("cup", "b", 1)]).await;
    let movements_before = app.all_movements("").await;

    let r = reserve(
        &app,
        json!({ "reservation_id": "order-9", "lines": [
            { "sku": "mug", "quantity": 5 },
            { "sku": "cup", "quantity": 4 },
            { "sku": "plate", "quantity": 1 },
        ] }),
    )
    .await;

    assert_eq!((r.status, r.error_code()), (409, "insufficient_stock"), "{r:?}");
    assert!(r.body["message"].is_string());
    assert_eq!(
        r.body["shortfalls"],
        json!([{ "sku": "cup", "requested": 4, "available": 3 }, { "sku": "plate", "requested": 1, "available": 0 }])
    );
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10], "the line that fitted holds nothing either");
    assert_eq!(figures(&app, "cup", "a").await, [2, 0, 0, 2]);
    assert_eq!(figures(&app, "cup", "b").await, [1, 0, 0, 1]);
    assert_eq!(app.all_movements("").await, movements_before);
    let read = app.get("/v1/reservations/order-9").await;
    assert_eq!((read.status, read.error_code()), (404, "unknown_reservation"), "{read:?}");
}

async fn the_same_reservation_id_and_body_answers_the_first_answer_again(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let body = json!({ "reservation_id": "order-77", "lines": [{ "sku": "mug", "quantity": 3 }], "reference": "web" });

    let first = reserve(&app, body.clone()).await;
    let again = reserve(&app, body).await;

    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["reservation_id"], "order-77");
    assert!(!replayed(&first));
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, first.body);
    assert!(replayed(&again), "{again:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 3, 0, 7], "held once");
    assert_eq!(app.all_movements("&sku=mug").await.len(), 2, "one receipt and one hold");
}

async fn the_same_reservation_id_with_another_body_is_422_idempotency_mismatch(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;

    let first =
        reserve(&app, json!({ "reservation_id": "order-78", "lines": [{ "sku": "mug", "quantity": 3 }] })).await;
    let other =
        reserve(&app, json!({ "reservation_id": "order-78", "lines": [{ "sku": "mug", "quantity": 4 }] })).await;

    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!((other.status, other.error_code()), (422, "idempotency_mismatch"), "{other:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 3, 0, 7]);
    let read = app.get("/v1/reservations/order-78").await;
    assert_eq!(read.body["lines"][0]["quantity"], 3);
}

async fn an_unknown_reservation_is_404_unknown_reservation(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;

    let read = app.get("/v1/reservations/no-such-order").await;

    assert_eq!((read.status, read.error_code()), (404, "unknown_reservation"), "{read:?}");
    for action in ["commit", "fulfil", "release"] {
        let r = step(&app, "no-such-order", action).await;
        assert_eq!((r.status, r.error_code()), (404, "unknown_reservation"), "{action}: {r:?}");
    }
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
}

async fn committing_a_hold_sells_everything_held(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);

    let commit = step(&app, &id, "commit").await;
    let again = step(&app, &id, "commit").await;

    assert_eq!(commit.status, 200, "{commit:?}");
    assert_eq!(commit.body["status"], "committed");
    assert_eq!(commit.body["lines"][0]["committed"], 4);
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "committed");
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 4, 6]);
    assert_eq!((again.status, again.error_code()), (409, "invalid_state"), "{again:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 4, 6]);
    assert_ledger_replays(&app, "mug").await;
}

async fn a_partial_commit_sells_what_is_listed_and_releases_the_rest(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10), ("cup", "a", 10)]).await;
    let held =
        reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 4 }, { "sku": "cup", "quantity": 3 }] })).await;
    let id = id_of(&held);

    let r = app
        .json("POST", &format!("/v1/reservations/{id}/commit"), &json!({ "lines": [{ "sku": "mug", "quantity": 1 }] }))
        .await;

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "committed");
    assert_eq!((&r.body["lines"][0]["sku"], &r.body["lines"][0]["committed"]), (&json!("mug"), &json!(1)));
    assert_eq!((&r.body["lines"][1]["sku"], &r.body["lines"][1]["committed"]), (&json!("cup"), &json!(0)));
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 1, 9]);
    assert_eq!(figures(&app, "cup", "a").await, [10, 0, 0, 10]);
    assert_ledger_replays(&app, "mug").await;
    assert_ledger_replays(&app, "cup").await;
}

async fn a_partial_commit_draws_from_allocations_in_sourcing_order(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 3), ("mug", "b", 5)]).await;
    let held = app.hold("mug", 5).await;
    assert_eq!(allocations(&held.body, 0), allocs(&[("a", 3), ("b", 2)]));
    let id = id_of(&held);

    let r = app
        .json("POST", &format!("/v1/reservations/{id}/commit"), &json!({ "lines": [{ "sku": "mug", "quantity": 4 }] }))
        .await;

    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["lines"][0]["committed"], 4);
    assert_eq!(figures(&app, "mug", "a").await, [3, 0, 3, 0]);
    assert_eq!(figures(&app, "mug", "b").await, [5, 0, 1, 4]);
    assert_ledger_replays(&app, "mug").await;
}

async fn a_commit_of_lines_the_hold_does_not_have_is_refused_and_keeps_the_hold(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10), ("cup", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    let path = format!("/v1/reservations/{id}/commit");

    let foreign = app.json("POST", &path, &json!({ "lines": [{ "sku": "cup", "quantity": 1 }] })).await;
    let greedy = app.json("POST", &path, &json!({ "lines": [{ "sku": "mug", "quantity": 5 }] })).await;
    let zero = app.json("POST", &path, &json!({ "lines": [{ "sku": "mug", "quantity": 0 }] })).await;

    assert_eq!((foreign.status, foreign.error_code()), (422, "line_not_in_reservation"), "{foreign:?}");
    assert_eq!((greedy.status, greedy.error_code()), (422, "commit_exceeds_held"), "{greedy:?}");
    assert_eq!((&greedy.body["held"], &greedy.body["requested"]), (&json!(4), &json!(5)));
    assert_eq!((zero.status, zero.error_code()), (422, "invalid_quantity"), "{zero:?}");
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "held");
    assert_eq!(figures(&app, "mug", "a").await, [10, 4, 0, 6]);
}

async fn committing_an_expired_hold_is_410_reservation_expired(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 4 }], "ttl_seconds": 60 })).await);
    app.advance(Duration::from_secs(61));

    let r = step(&app, &id, "commit").await;

    assert_eq!((r.status, r.error_code()), (410, "reservation_expired"), "{r:?}");
    assert_eq!(r.body["reservation_id"], id.as_str());
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "expired");
}

async fn fulfilling_a_sale_takes_it_off_on_hand(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    assert_eq!(step(&app, &id, "commit").await.status, 200);

    let shipped = step(&app, &id, "fulfil").await;
    let again = step(&app, &id, "fulfil").await;

    assert_eq!(shipped.status, 200, "{shipped:?}");
    assert_eq!(shipped.body["status"], "fulfilled");
    assert_eq!(figures(&app, "mug", "a").await, [6, 0, 0, 6]);
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "fulfilled");
    assert_eq!((again.status, again.error_code()), (409, "invalid_state"), "{again:?}");
    assert_eq!(figures(&app, "mug", "a").await, [6, 0, 0, 6]);
    assert_ledger_replays(&app, "mug").await;
}

async fn fulfilling_what_is_not_committed_is_409_invalid_state(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let held = id_of(&app.hold("mug", 4).await);
    let released = id_of(&app.hold("mug", 1).await);
    assert_eq!(step(&app, &released, "release").await.status, 200);

    let early = step(&app, &held, "fulfil").await;
    let late = step(&app, &released, "fulfil").await;

    assert_eq!((early.status, early.error_code()), (409, "invalid_state"), "{early:?}");
    assert_eq!((late.status, late.error_code()), (409, "invalid_state"), "{late:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 4, 0, 6]);
    assert_eq!(app.get(&format!("/v1/reservations/{held}")).await.body["status"], "held");
}

async fn releasing_a_hold_gives_the_stock_back_and_again_changes_nothing(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    assert_eq!(figures(&app, "mug", "a").await, [10, 4, 0, 6]);

    let released = step(&app, &id, "release").await;
    let movements_after_first = app.all_movements("").await;
    let again = step(&app, &id, "release").await;

    assert_eq!(released.status, 200, "{released:?}");
    assert_eq!(released.body["status"], "released");
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, released.body, "unchanged");
    assert_eq!(app.all_movements("").await, movements_after_first);
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
    let commit = step(&app, &id, "commit").await;
    assert_eq!((commit.status, commit.error_code()), (409, "invalid_state"), "{commit:?}");
    assert_ledger_replays(&app, "mug").await;
}

async fn releasing_a_sale_returns_the_stock(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    assert_eq!(step(&app, &id, "commit").await.status, 200);
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 4, 6]);

    let returned = step(&app, &id, "release").await;
    let again = step(&app, &id, "release").await;

    assert_eq!(returned.status, 200, "{returned:?}");
    assert_eq!(returned.body["status"], "released");
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
    assert_eq!((again.status, &again.body), (200, &returned.body));
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 0, 10]);
    assert_ledger_replays(&app, "mug").await;
}

async fn releasing_a_fulfilled_reservation_is_409_invalid_state(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    assert_eq!(step(&app, &id, "commit").await.status, 200);
    assert_eq!(step(&app, &id, "fulfil").await.status, 200);

    let r = step(&app, &id, "release").await;

    assert_eq!((r.status, r.error_code()), (409, "invalid_state"), "{r:?}");
    assert_eq!(figures(&app, "mug", "a").await, [6, 0, 0, 6]);
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "fulfilled");
}

async fn a_hold_past_its_expiry_stops_counting_at_read_time_without_any_job(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 4 }], "ttl_seconds": 60 })).await);
    assert_eq!(figures(&app, "mug", "a").await, [10, 4, 0, 6]);
    app.advance(Duration::from_secs(61));

    let read = app.get(&format!("/v1/reservations/{id}")).await;
    let stock = figures(&app, "mug", "a").await;
    let everything = app.hold("mug", 10).await;

    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["status"], "expired");
    assert_eq!(stock, [10, 0, 0, 10], "the lapsed hold no longer counts");
    assert_eq!(everything.status, 201, "its units can be held again: {everything:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 10, 0, 0]);
}

async fn the_expire_job_books_lapsed_holds_once(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10), ("mug", "b", 10)]).await;
    let short = |q: i64| json!({ "lines": [{ "sku": "mug", "quantity": q }], "ttl_seconds": 60 });
    let split = id_of(&reserve(&app, short(12)).await);
    let small = id_of(
        &reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 2, "location": "b" }], "ttl_seconds": 60 })).await,
    );
    let live = id_of(&app.hold("mug", 3).await);
    app.advance(Duration::from_secs(61));
    let scheduler = [("content-type", "application/json"), ("x-cloudscheduler", "true")];

    let first = app.send("POST", "/jobs/expire-reservations", &scheduler, None).await;
    let expire_movements = app.all_movements("").await.into_iter().filter(|m| m["kind"] == "expire").count();
    let second = app.send("POST", "/jobs/expire-reservations", &scheduler, None).await;

    assert_eq!((first.status, &first.body), (200, &json!({ "expired": 2 })), "{first:?}");
    assert_eq!((second.status, &second.body), (200, &json!({ "expired": 0 })), "{second:?}");
    assert_eq!(expire_movements, 3, "one per allocation: a, b, and b again");
    let after = app.all_movements("").await.into_iter().filter(|m| m["kind"] == "expire").count();
    assert_eq!(after, 3, "the second run booked nothing");
    for (id, status) in [(&split, "expired"), (&small, "expired"), (&live, "held")] {
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], status, "{id}");
    }
    let stock = app.stock("mug").await;
    assert_eq!(stock["total"]["reserved"], 3);
    assert_eq!(stock["total"]["available"], 17);
    assert_ledger_replays(&app, "mug").await;
}

async fn an_idempotency_key_on_commit_replays_the_answer_without_committing_twice(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let id = id_of(&app.hold("mug", 4).await);
    let path = format!("/v1/reservations/{id}/commit");
    let body = json!({ "lines": [{ "sku": "mug", "quantity": 3 }] });

    let first = app.json_with_key("POST", &path, "commit-1", &body).await;
    let movements_after_first = app.all_movements("").await;
    let again = app.json_with_key("POST", &path, "commit-1", &body).await;
    let other =
        app.json_with_key("POST", &path, "commit-1", &json!({ "lines": [{ "sku": "mug", "quantity": 2 }] })).await;

    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["lines"][0]["committed"], 3);
    assert_eq!(again.status, 200, "a retry answers as the first time, not 409: {again:?}");
    assert_eq!(again.body, first.body);
    assert!(replayed(&again), "{again:?}");
    assert_eq!((other.status, other.error_code()), (422, "idempotency_mismatch"), "{other:?}");
    assert_eq!(app.all_movements("").await, movements_after_first);
    assert_eq!(figures(&app, "mug", "a").await, [10, 0, 3, 7]);
    let unkeyed = step(&app, &id, "commit").await;
    assert_eq!((unkeyed.status, unkeyed.error_code()), (409, "invalid_state"), "{unkeyed:?}");
}

async fn an_idempotency_key_on_a_hold_replays_the_answer_without_holding_twice(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let body = json!({ "lines": [{ "sku": "mug", "quantity": 3 }] });

    let first = app.json_with_key("POST", "/v1/reservations", "checkout-1", &body).await;
    let again = app.json_with_key("POST", "/v1/reservations", "checkout-1", &body).await;
    let other = app
        .json_with_key("POST", "/v1/reservations", "checkout-1", &json!({ "lines": [{ "sku": "mug", "quantity": 4 }] }))
        .await;

    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!((again.status, &again.body), (200, &first.body), "{again:?}");
    assert!(replayed(&again), "{again:?}");
    assert_eq!((other.status, other.error_code()), (422, "idempotency_mismatch"), "{other:?}");
    assert_eq!(figures(&app, "mug", "a").await, [10, 3, 0, 7], "held once");
}

/// A client that sends a fresh `Idempotency-Key` per attempt (or none on a retry) still has a stable
/// `reservation_id`, which the contract makes idempotent on its own.
async fn the_same_reservation_id_answers_as_the_first_time_whatever_idempotency_key_comes_with_it(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    let body = json!({ "reservation_id": "order-80", "lines": [{ "sku": "mug", "quantity": 3 }] });
    let other = json!({ "reservation_id": "order-80", "lines": [{ "sku": "mug", "quantity": 4 }] });

    let first = app.json_with_key("POST", "/v1/reservations", "attempt-1", &body).await;
    let keyless = reserve(&app, body.clone()).await;
    let new_key = app.json_with_key("POST", "/v1/reservations", "attempt-2", &body).await;
    let changed = app.json_with_key("POST", "/v1/reservations", "attempt-3", &other).await;

    assert_eq!(first.status, 201, "{first:?}");
    let outcomes = [&keyless, &new_key, &changed].map(|r| (r.status, r.error_code().to_owned()));
    let expected = [(200, String::new()), (200, String::new()), (422, "idempotency_mismatch".to_owned())];
    assert_eq!(outcomes, expected, "retry without the key, with another key, and another body with another key");
    assert_eq!(keyless.body, first.body);
    assert_eq!(new_key.body, first.body);
    assert_eq!(figures(&app, "mug", "a").await, [10, 3, 0, 7], "held once");
}

/// "`Idempotency-Key` on any POST behaves the same way": the jobs are POSTs too.
async fn an_idempotency_key_on_the_expire_job_answers_the_first_summary_again(b: Backend) {
    let app = with_stock(b, &[("mug", "a", 10)]).await;
    id_of(&reserve(&app, json!({ "lines": [{ "sku": "mug", "quantity": 4 }], "ttl_seconds": 60 })).await);
    app.advance(Duration::from_secs(61));
    let headers = [("x-cloudscheduler", "true"), ("idempotency-key", "expire-2026-01-01T00:00")];

    let first = app.send("POST", "/jobs/expire-reservations", &headers, None).await;
    let again = app.send("POST", "/jobs/expire-reservations", &headers, None).await;

    assert_eq!((first.status, &first.body), (200, &json!({ "expired": 1 })), "{first:?}");
    assert_eq!((again.status, &again.body), (200, &first.body), "the first answer again: {again:?}");
    assert!(replayed(&again), "{again:?}");
    assert_eq!(app.all_movements("").await.into_iter().filter(|m| m["kind"] == "expire").count(), 1);
}
