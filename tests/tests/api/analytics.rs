//! Analytics (CONTRACT "Analytics"): a scripted history of movement events with known answers goes to the
//! aggregator function, and every analytics endpoint must give those answers; threshold crossings are told
//! once each however often (and however concurrently) their causes are delivered; and in `stockroom serve`
//! real sales reach the figures within the contract's 5 seconds.

use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use stockroom_aggregator::observe_structured;
use stockroom_e2e::{Api, Backend, MovementSpec, Reply, Rng, TestApp, TestDb, count_rows, settings_for};
use stockroom_store::{AnalyticsRecorder, ObservedEvent, SqlStore};

/// One movement of a scripted history, with the row's levels after it.
struct Step {
    ago: TimeDelta,
    sku: &'static str,
    location: &'static str,
    kind: &'static str,
    /// (on_hand, reserved, committed) deltas.
    deltas: (i64, i64, i64),
    /// (on_hand, reserved, committed) after it; safety stock is 0 throughout.
    after: (i64, i64, i64),
    order: Option<String>,
}

fn step(
    ago: TimeDelta,
    sku: &'static str,
    location: &'static str,
    kind: &'static str,
    deltas: (i64, i64, i64),
    after: (i64, i64, i64),
    order: Option<&str>,
) -> Step {
    Step { ago, sku, location, kind, deltas, after, order: order.map(str::to_owned) }
}

/// The structured CloudEvent the outbox would have published for `s`.
fn movement_event(id: &str, s: &Step, now: DateTime<Utc>) -> Value {
    let cause = s.order.as_ref().map_or_else(|| "adjustment:script".to_owned(), |o| format!("reservation:{o}"));
    MovementSpec {
        id,
        source: "//stockroom/reservations",
        at: now - s.ago,
        sku: s.sku,
        location: s.location,
        kind: s.kind,
        deltas: s.deltas,
        after: s.after,
        cause: &cause,
    }
    .event()
}

async fn post_structured(api: &Api, event: &Value) -> Reply {
    let headers = [("content-type", "application/cloudevents+json")];
    api.send("POST", "/events", &headers, Some(event.to_string().into_bytes())).await
}

/// The same event as a Pub/Sub push with the CloudEvents binding (`ce-*` attributes, data = the event's data).
async fn post_push(api: &Api, event: &Value, message_id: &str) -> Reply {
    let data = base64::engine::general_purpose::STANDARD.encode(event["data"].to_string());
    let envelope = json!({
        "message": {
            "data": data, "messageId": message_id, "publishTime": "2026-01-01T00:00:00Z",
            "attributes": {
                "ce-specversion": "1.0", "ce-id": event["id"], "ce-source": event["source"],
                "ce-type": event["type"], "ce-subject": event["subject"], "ce-time": event["time"],
            },
        },
        "subscription": "projects/p/subscriptions/aggregator",
    });
    api.json("POST", "/pubsub/push", &envelope).await
}

fn d(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

fn h(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

/// The history. BEST sells 10 eight days ago (outside every window), then 7, 4 (split over two locations, one
/// order) and 5, and 2 come back an hour ago: 14 net in 7 days (2 a day), 3 in 24 hours; 9 left (6 east,
/// 3 west) last 4.5 days, under the default 7: low. SLOW: 7 in 7 days, 50 left, 50 days of cover, but its
/// reorder point is 60: low. STEADY: 7 in 7 days, 30 left: ok. GONE: sold out: depleted. NEW: stock, no
/// sales: ok, no velocity.
fn history() -> Vec<Step> {
    vec![
        step(d(10), "BEST", "east", "adjustment", (100, 0, 0), (100, 0, 0), None),
        step(d(10), "BEST", "west", "adjustment", (20, 0, 0), (20, 0, 0), None),
        step(d(8), "BEST", "east", "commit", (0, -10, 10), (100, 0, 10), Some("o0")),
        step(d(8) - h(1), "BEST", "east", "fulfil", (-10, 0, -10), (90, 0, 0), Some("o0")),
        step(d(3), "BEST", "east", "hold", (0, 7, 0), (90, 7, 0), Some("o1")),
        step(d(3), "BEST", "east", "commit", (0, -7, 7), (90, 0, 7), Some("o1")),
        step(h(30), "BEST", "east", "commit", (0, -2, 2), (90, 0, 9), Some("o2")),
        step(h(30), "BEST", "west", "commit", (0, -2, 2), (20, 0, 2), Some("o2")),
        step(h(2), "BEST", "east", "commit", (0, -5, 5), (90, 0, 14), Some("o3")),
        step(h(1), "BEST", "east", "release", (0, 0, -2), (90, 0, 12), Some("o3")),
        // A count brings east to 6 available and west to 3.
        step(TimeDelta::minutes(30), "BEST", "east", "adjustment", (-72, 0, 0), (18, 0, 12), None),
        step(TimeDelta::minutes(30), "BEST", "west", "adjustment", (-15, 0, 0), (5, 0, 2), None),
        step(d(9), "SLOW", "east", "adjustment", (57, 0, 0), (57, 0, 0), None),
        step(d(2), "SLOW", "east", "commit", (0, -7, 7), (57, 0, 7), Some("s1")),
        step(d(6), "STEADY", "west", "adjustment", (37, 0, 0), (37, 0, 0), None),
        step(h(20), "STEADY", "west", "commit", (0, -7, 7), (37, 0, 7), Some("t1")),
        step(d(5), "GONE", "east", "adjustment", (7, 0, 0), (7, 0, 0), None),
        step(d(4), "GONE", "east", "commit", (0, -7, 7), (7, 0, 7), Some("g1")),
        step(d(1), "NEW", "west", "adjustment", (5, 0, 0), (5, 0, 0), None),
    ]
}

async fn feed_history(api: &Api, now: DateTime<Utc>) {
    for (i, s) in history().iter().enumerate() {
        let r = post_structured(api, &movement_event(&format!("script-{i:03}"), s, now)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn row<'a>(rows: &'a Value, sku: &str) -> &'a Value {
    rows.as_array().and_then(|a| a.iter().find(|r| r["sku"] == sku)).unwrap_or(&Value::Null)
}

fn time_of(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_default()
}

async fn scripted_history_gives_known_answers(backend: Backend) {
    let app = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    let now = Utc::now();
    feed_history(&app, now).await;
    let r = app.json("PUT", "/v1/skus/SLOW/policy", &json!({ "reorder_point": 60 })).await;
    assert_eq!(r.status, 404, "the aggregator alone serves no policy route");
    // Policies live in the ledger's table, which the aggregator reads; set it as stock-updates would.
    set_policy(&app.db, "SLOW", None, Some(60)).await;

    let asked = Utc::now();
    let health = app.get("/v1/analytics/stock-health").await;
    let answered = Utc::now();
    assert_eq!(health.status, 200, "{}", health.body);
    let skus: Vec<&str> = health.body.as_array().into_iter().flatten().filter_map(|r| r["sku"].as_str()).collect();
    assert_eq!(skus, ["BEST", "GONE", "NEW", "SLOW", "STEADY"], "one row per sku, in sku order");

    let best = row(&health.body, "BEST");
    assert_eq!(best["available"], 9);
    assert_eq!(best["units_sold_24h"], 3);
    assert_eq!(best["units_sold_7d"], 14);
    assert_eq!(best["velocity_per_day"], 2.0);
    assert_eq!(best["days_of_cover"], 4.5);
    assert_eq!(best["status"], "low");
    // Now (when the figures were read) + 4.5 days, to the second.
    let stockout = time_of(&best["projected_stockout_at"]);
    let (earliest, latest) = (asked + TimeDelta::hours(108), answered + TimeDelta::hours(108));
    assert!(
        stockout >= earliest - TimeDelta::seconds(1) && stockout <= latest + TimeDelta::seconds(1),
        "stock-out {stockout}, expected between {earliest} and {latest}"
    );

    let slow = row(&health.body, "SLOW");
    assert_eq!((slow["available"].as_i64(), slow["velocity_per_day"].as_f64()), (Some(50), Some(1.0)));
    assert_eq!(slow["days_of_cover"], 50.0);
    assert_eq!(slow["status"], "low", "at or under its reorder point");
    let steady = row(&health.body, "STEADY");
    assert_eq!((steady["days_of_cover"].as_f64(), steady["status"].as_str()), (Some(30.0), Some("ok")));
    let gone = row(&health.body, "GONE");
    assert_eq!((gone["available"].as_i64(), gone["status"].as_str()), (Some(0), Some("depleted")));
    assert_eq!(gone["days_of_cover"], 0.0);
    let new = row(&health.body, "NEW");
    assert_eq!(new["velocity_per_day"], 0.0);
    assert_eq!((new["days_of_cover"].is_null(), new["projected_stockout_at"].is_null()), (true, true));
    assert_eq!(new["status"], "ok");

    // Per location: BEST at west sold 2 (of order o2) in 7 days; 3 available, 10.5 days: ok.
    let west = app.get("/v1/analytics/stock-health?location=west").await;
    let best_west = row(&west.body, "BEST");
    assert_eq!(best_west["available"], 3);
    assert_eq!(best_west["units_sold_7d"], 2);
    assert_eq!(best_west["days_of_cover"], 10.5);
    assert_eq!(best_west["status"], "ok");
    assert!(row(&west.body, "GONE").is_null(), "GONE has no row at west");

    // Filter by status.
    let low = app.get("/v1/analytics/stock-health?status=low").await;
    let low_skus: Vec<&str> = low.body.as_array().into_iter().flatten().filter_map(|r| r["sku"].as_str()).collect();
    assert_eq!(low_skus, ["BEST", "SLOW"]);

    // Top sellers: 24h has BEST (3 net, order o3) and STEADY (7, t1); 7d ranks BEST 14 (o1, o2, o3), then the 7s.
    let day = app.get("/v1/analytics/top-sellers?window=24h").await;
    assert_eq!(day.body, json!([{"sku": "STEADY", "units": 7, "orders": 1}, {"sku": "BEST", "units": 3, "orders": 1}]));
    let week = app.get("/v1/analytics/top-sellers?window=7d&limit=2").await;
    assert_eq!(week.body, json!([{"sku": "BEST", "units": 14, "orders": 3}, {"sku": "GONE", "units": 7, "orders": 1}]));

    // Hourly series over the last 3 hours: o3's 5 two hours ago, its 2 back an hour ago. The split order o2 is
    // one order in its bucket.
    let to = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let from = (now - h(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let hours = app.get(&format!("/v1/analytics/skus/BEST/sales?bucket=hour&from={from}&to={to}")).await;
    assert_eq!(hours.status, 200, "{}", hours.body);
    let points = hours.body.as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), 4, "dense: one point per hour, zeros included: {points:?}");
    let units: Vec<i64> = points.iter().filter_map(|p| p["units"].as_i64()).collect();
    let sum: i64 = units.iter().sum();
    assert_eq!(sum, 3);
    assert!(units.contains(&5) && units.contains(&-2), "{units:?}");
    let o2_from = (now - h(31)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let o2_to = (now - h(29)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let around_o2 = app.get(&format!("/v1/analytics/skus/BEST/sales?bucket=hour&from={o2_from}&to={o2_to}")).await;
    let (units, orders) = around_o2
        .body
        .as_array()
        .into_iter()
        .flatten()
        .fold((0, 0), |(u, o), p| (u + p["units"].as_i64().unwrap_or(0), o + p["orders"].as_i64().unwrap_or(0)));
    assert_eq!((units, orders), (4, 1), "2 + 2 from two locations, one order");
    let days = app.get("/v1/analytics/skus/BEST/sales?bucket=day").await;
    let days = days.body.as_array().cloned().unwrap_or_default();
    assert!(days.len() == 30 || days.len() == 31, "30 days by default: {}", days.len());
    let total: i64 = days.iter().filter_map(|p| p["units"].as_i64()).sum();
    assert_eq!(total, 24, "every sale in the 30 days, the one 8 days ago included");
}

/// The trailing windows are exact to the microsecond, whatever hour the test runs in: sales a minute either side
/// of 24 hours and of 7 days ago fall in or out, though each shares its hour with one on the other side, and a
/// sale stamped two minutes after the read is not counted yet.
async fn trailing_windows_are_exact_at_their_edges(backend: Backend) {
    let app = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    let now = Utc::now();
    let m = TimeDelta::minutes;
    let steps = [
        step(d(9), "EDGE", "east", "adjustment", (100, 0, 0), (100, 0, 0), None),
        step(d(9), "EDGE", "west", "adjustment", (100, 0, 0), (100, 0, 0), None),
        step(d(7) + m(1), "EDGE", "east", "commit", (0, -11, 11), (100, 0, 11), Some("e1")),
        step(d(7) - m(1), "EDGE", "east", "commit", (0, -7, 7), (100, 0, 18), Some("e2")),
        step(h(24) + m(1), "EDGE", "east", "commit", (0, -5, 5), (100, 0, 23), Some("e3")),
        step(h(24) - m(1), "EDGE", "west", "commit", (0, -3, 3), (100, 0, 3), Some("e4")),
        step(-m(2), "EDGE", "east", "commit", (0, -13, 13), (100, 0, 36), Some("e5")),
    ];
    for (i, s) in steps.iter().enumerate() {
        let r = post_structured(&app, &movement_event(&format!("edge-{i}"), s, now)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let sold = |body: &Value| {
        let r = row(body, "EDGE");
        (r["units_sold_24h"].as_i64(), r["units_sold_7d"].as_i64())
    };
    let all = app.get("/v1/analytics/stock-health").await;
    assert_eq!(sold(&all.body), (Some(3), Some(15)), "{}", all.body);
    let east = app.get("/v1/analytics/stock-health?location=east").await;
    assert_eq!(sold(&east.body), (Some(0), Some(12)), "{}", east.body);
    let west = app.get("/v1/analytics/stock-health?location=west").await;
    assert_eq!(sold(&west.body), (Some(3), Some(3)), "{}", west.body);

    // The recorder judges from the hourly series, with the same edges: nothing has crossed yet; a reorder point
    // above the stock and one more movement make it low, and the crossing's velocity is the week's 15 over 7 days.
    let lows = || async {
        let events = outbox_events(&app.db.url).await;
        events.into_iter().filter(|e| e["type"] == "dev.stockroom.stock.low.v1").collect::<Vec<_>>()
    };
    assert_eq!(lows().await, Vec::<Value>::new());
    set_policy(&app.db, "EDGE", None, Some(1_000)).await;
    let nudge = step(m(3), "EDGE", "west", "adjustment", (1, 0, 0), (101, 0, 3), None);
    let r = post_structured(&app, &movement_event("edge-nudge", &nudge, now)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let lows = lows().await;
    assert_eq!(lows.len(), 1, "{lows:?}");
    assert_eq!(lows[0]["data"]["velocity_per_day"], json!(15.0 / 7.0), "{}", lows[0]);
}

/// Sets a sku's thresholds in the ledger's policy table, as `PUT /v1/skus/{sku}/policy` does.
async fn set_policy(db: &TestDb, sku: &str, low_stock_days: Option<i64>, reorder_point: Option<i64>) {
    let number = |n: Option<i64>| n.map_or("NULL".to_owned(), |n| n.to_string());
    let sql = format!(
        "INSERT INTO sku_policies (sku, low_stock_days, reorder_point, safety_stock, updated_at) \
         VALUES ('{sku}', {}, {}, 0, 0)",
        number(low_stock_days),
        number(reorder_point)
    );
    assert_eq!(stockroom_e2e::execute(&db.url, &sql).await, 1, "policy");
}

/// One sku walks ok → low → depleted → ok. Every event is delivered two or three times, by both paths, the
/// copies at once: each crossing is still one event, with the figures that decided it.
async fn each_crossing_is_told_once_under_duplicate_delivery(backend: Backend) {
    let app = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    let now = Utc::now();
    let walk = [
        step(h(5), "HOT", "east", "adjustment", (20, 0, 0), (20, 0, 0), None),
        // 14 sold in 7 days: 2 a day; 6 left is 3 days: low.
        step(h(4), "HOT", "east", "commit", (0, -14, 14), (20, 0, 14), Some("a")),
        // Still low: no new crossing.
        step(h(3), "HOT", "east", "commit", (0, -2, 2), (20, 0, 16), Some("b")),
        step(h(2), "HOT", "east", "commit", (0, -4, 4), (20, 0, 20), Some("c")),
        // Restocked: 100 available at 20 a week is 35 days: ok again.
        step(h(1), "HOT", "east", "adjustment", (100, 0, 0), (120, 0, 20), None),
    ];
    for (i, s) in walk.iter().enumerate() {
        let event = movement_event(&format!("walk-{i}"), s, now);
        let copies = 2 + i % 2;
        let replies = futures::future::join_all((0..copies).map(|c| {
            let (api, event) = (&app.api, &event);
            async move {
                if c % 2 == 0 {
                    post_structured(api, event).await
                } else {
                    post_push(api, event, &format!("m{i}-{c}")).await
                }
            }
        }))
        .await;
        for r in replies {
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    let count = |ty: &'static str| {
        let url = app.db.url.clone();
        async move { count_rows(&url, &format!("SELECT COUNT(*) FROM outbox WHERE event LIKE '%\"{ty}\"%'")).await }
    };
    assert_eq!(count("dev.stockroom.stock.low.v1").await, 1);
    assert_eq!(count("dev.stockroom.stock.depleted.v1").await, 1);
    assert_eq!(count("dev.stockroom.stock.replenished.v1").await, 1);
    assert_eq!(count_rows(&app.db.url, "SELECT COUNT(*) FROM analytics_events").await, 5, "each event kept once");

    // The low event carries the figures and the movement that crossed.
    let events = outbox_events(&app.db.url).await;
    let low = events.iter().find(|e| e["type"] == "dev.stockroom.stock.low.v1").cloned().unwrap_or_default();
    assert_eq!(low["subject"], "HOT");
    assert_eq!(low["source"], "//stockroom/aggregator");
    assert_eq!(low["data"]["available"], 6);
    assert_eq!(low["data"]["velocity_per_day"], 2.0);
    assert_eq!(low["data"]["days_of_cover"], 3.0);
    assert_eq!(low["data"]["previous_status"], "ok");
    assert_eq!(low["data"]["movement_id"], "walk-1");
    let replenished = events.iter().find(|e| e["type"] == "dev.stockroom.stock.replenished.v1").cloned();
    let replenished = replenished.unwrap_or_default();
    assert_eq!(replenished["data"]["previous_status"], "depleted");
    assert_eq!(replenished["data"]["status"], "ok");
}

/// Different events of one sku recorded at the same moment, each of which alone crosses the line: the
/// recorders take turns on the sku, so the crossing is told once, not once per racer.
async fn racing_causes_of_one_crossing_tell_it_once(backend: Backend) {
    let app = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    let now = Utc::now();
    // The sku is known and ok (its status row exists, so the racers meet on a lock, not on an insert).
    let first = step(h(2), "RACE", "home", "adjustment", (5, 0, 0), (5, 0, 0), None);
    assert_eq!(post_structured(&app, &movement_event("race-first", &first, now)).await.status, 200);
    // Now any stock at all is at or under the reorder point: the first racer recorded makes the sku low.
    set_policy(&app.db, "RACE", None, Some(1_000)).await;
    const LOCATIONS: [&str; 16] =
        ["l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9", "l10", "l11", "l12", "l13", "l14", "l15"];
    let events: Vec<Value> = LOCATIONS
        .iter()
        .enumerate()
        .map(|(i, loc)| {
            let s = step(h(1), "RACE", loc, "adjustment", (5, 0, 0), (5, 0, 0), None);
            movement_event(&format!("race-{i}"), &s, now)
        })
        .collect();
    let replies = futures::future::join_all(events.iter().map(|e| post_structured(&app.api, e))).await;
    for r in replies {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let lows = count_rows(&app.db.url, "SELECT COUNT(*) FROM outbox WHERE event LIKE '%stock.low.v1%'").await;
    assert_eq!(lows, 1, "one crossing, told once");
    let health = app.get("/v1/analytics/stock-health").await;
    assert_eq!(row(&health.body, "RACE")["available"], 85);
}

/// A seeded random history over 4 skus and 2 locations: restocks, holds, commits (some split over both
/// locations), returns and fulfilments, with consistent levels, spread over the last 9 days.
fn random_history(rng: &mut Rng) -> Vec<Step> {
    const SKUS: [&str; 4] = ["R0", "R1", "R2", "R3"];
    const LOCATIONS: [&str; 2] = ["east", "west"];
    let mut levels = std::collections::HashMap::<(usize, usize), (i64, i64, i64)>::new();
    let mut steps = Vec::new();
    let mut minutes_ago = 9 * 24 * 60;
    for n in 0..150 {
        minutes_ago -= 1 + rng.below(80) as i64;
        let ago = TimeDelta::minutes(minutes_ago.max(1));
        let sku = rng.below(4) as usize;
        let order = format!("q{n}");
        let mut push = |loc: usize, kind: &'static str, d: (i64, i64, i64), order: Option<&str>| {
            let l = levels.entry((sku, loc)).or_default();
            *l = (l.0 + d.0, l.1 + d.1, l.2 + d.2);
            steps.push(step(ago, SKUS[sku], LOCATIONS[loc], kind, d, *l, order));
        };
        match rng.below(10) {
            0..=1 => push(rng.below(2) as usize, "adjustment", (1 + rng.below(30) as i64, 0, 0), None),
            2..=6 => {
                // A sale, sometimes split over both locations (one order).
                let q = 1 + rng.below(5) as i64;
                let split = rng.below(3) == 0;
                for loc in if split { vec![0, 1] } else { vec![rng.below(2) as usize] } {
                    push(loc, "hold", (0, q, 0), Some(&order));
                    push(loc, "commit", (0, -q, q), Some(&order));
                }
            }
            7 => {
                let loc = rng.below(2) as usize;
                push(loc, "hold", (0, 2, 0), Some(&order));
                push(loc, "commit", (0, -2, 2), Some(&order));
                push(loc, "release", (0, 0, -1), Some(&order));
            }
            _ => {
                let loc = rng.below(2) as usize;
                push(loc, "hold", (0, 1, 0), Some(&order));
                push(loc, "commit", (0, -1, 1), Some(&order));
                push(loc, "fulfil", (-1, 0, -1), Some(&order));
            }
        }
    }
    steps
}

/// The figures every endpoint gives, with the stock-out times (which follow each read's own clock) taken out.
async fn every_figure(api: &Api) -> Value {
    let mut all = json!({});
    for path in [
        "/v1/analytics/stock-health".to_owned(),
        "/v1/analytics/stock-health?location=east".to_owned(),
        "/v1/analytics/stock-health?location=west".to_owned(),
        "/v1/analytics/top-sellers?window=24h&limit=100".to_owned(),
        "/v1/analytics/top-sellers?window=7d&limit=100".to_owned(),
    ]
    .into_iter()
    .chain(["R0", "R1", "R2", "R3"].iter().flat_map(|s| {
        [format!("/v1/analytics/skus/{s}/sales?bucket=hour"), format!("/v1/analytics/skus/{s}/sales?bucket=day")]
    })) {
        let mut r = api.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        for row in r.body.as_array_mut().into_iter().flatten() {
            if let Some(o) = row.as_object_mut() {
                o.remove("projected_stockout_at");
            }
        }
        all[path] = r.body;
    }
    all
}

/// The same seeded history recorded once in order, and delivered out of order with up to three copies of each
/// event (eight deliveries at a time, by both paths): every figure is the same.
async fn shuffled_duplicated_delivery_gives_the_same_figures(backend: Backend) {
    let (mut rng, _seed) = Rng::from_env("shuffled_duplicated_delivery_gives_the_same_figures");
    let now = Utc::now();
    let events: Vec<Value> = random_history(&mut rng)
        .iter()
        .enumerate()
        .map(|(i, s)| movement_event(&format!("rnd-{i:04}"), s, now))
        .collect();

    let in_order = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    for e in &events {
        assert_eq!(post_structured(&in_order, e).await.status, 200);
    }
    let shuffled = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    let mut deliveries: Vec<(usize, usize)> =
        (0..events.len()).flat_map(|i| (0..1 + rng.below(3) as usize).map(move |c| (i, c))).collect();
    rng.shuffle(&mut deliveries);
    for chunk in deliveries.chunks(8) {
        let replies = futures::future::join_all(chunk.iter().map(|&(i, c)| {
            let api = &shuffled.api;
            let e = &events[i];
            async move {
                if c % 2 == 0 { post_structured(api, e).await } else { post_push(api, e, &format!("m{i}-{c}")).await }
            }
        }))
        .await;
        for r in replies {
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    assert_eq!(every_figure(&shuffled).await, every_figure(&in_order).await);
    let kept = count_rows(&shuffled.db.url, "SELECT COUNT(*) FROM analytics_events").await;
    assert_eq!(kept, events.len() as i64);
}

/// The recorder reads the level and series rows a batch touches once, brings them up to date in memory, and
/// writes each once. One seeded history, shuffled, with up to three copies of each event, is delivered to two
/// stores in the same order: to one an event a call, to the other cut into batches of 1 to 60 (split orders,
/// late events and copies of one event inside a batch). Both are left with the same rows, row for row, the
/// order-dependent ones included (a sku's total levels in a bucket are those known when its newest movement
/// was recorded).
async fn batched_recording_leaves_the_rows_one_at_a_time_leaves(backend: Backend) {
    let (mut rng, _seed) = Rng::from_env("batched_recording_leaves_the_rows_one_at_a_time_leaves");
    let now = Utc::now();
    let events: Vec<ObservedEvent> = random_history(&mut rng)
        .iter()
        .enumerate()
        .map(|(i, s)| observe_structured(&movement_event(&format!("bat-{i:04}"), s, now)).expect("a movement event"))
        .collect();
    let mut deliveries: Vec<&ObservedEvent> = events.iter().flat_map(|e| vec![e; 1 + rng.below(3) as usize]).collect();
    rng.shuffle(&mut deliveries);

    let one_by_one = TestDb::new(backend).await;
    let store = SqlStore::connect(&settings_for(&one_by_one.url).store()).await.expect("a migrated store");
    for e in &deliveries {
        store.record_events(vec![(*e).clone()]).await.expect("recorded");
    }
    drop(store);

    let batched = TestDb::new(backend).await;
    let store = SqlStore::connect(&settings_for(&batched.url).store()).await.expect("a migrated store");
    let mut rest = deliveries.as_slice();
    let mut batches = 0;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at((1 + rng.below(60) as usize).min(rest.len()));
        store.record_events(batch.iter().map(|e| (*e).clone()).collect()).await.expect("recorded");
        rest = tail;
        batches += 1;
    }
    drop(store);
    assert!(batches < deliveries.len() / 10, "{batches} batches for {} deliveries", deliveries.len());

    for sql in [
        "SELECT sku, location, bucket, start, units_sold, orders, on_hand, available, last_at FROM analytics_series \
         ORDER BY sku, location, bucket, start",
        "SELECT sku, location, on_hand, reserved, committed, safety_stock, available, movement_at, movement_id \
         FROM analytics_levels ORDER BY sku, location",
        "SELECT sku, location, status FROM analytics_status ORDER BY sku, location",
        "SELECT COUNT(*) FROM analytics_events",
    ] {
        let (want, got) = (cells(&one_by_one.url, sql).await, cells(&batched.url, sql).await);
        assert!(want.len() > 1 || sql.contains("COUNT"), "{sql}: too few rows to compare: {want:?}");
        let first_difference = want.iter().zip(&got).find(|(w, g)| w != g);
        assert!(
            want.len() == got.len() && first_difference.is_none(),
            "{sql}: {} rows one at a time, {} batched; first difference (one at a time, batched): {first_difference:?}",
            want.len(),
            got.len()
        );
    }
}

/// A query's rows, each cell as text.
async fn cells(url: &str, sql: &str) -> Vec<Vec<String>> {
    let rows = stockroom_e2e::rows(url, sql).await;
    rows.iter()
        .map(|r| {
            (0..r.columns())
                .map(|i| match r.opt_int(i) {
                    Ok(n) => format!("{n:?}"),
                    Err(_) => format!("{:?}", r.opt_text(i).expect("an integer or text")),
                })
                .collect()
        })
        .collect()
}

async fn outbox_events(url: &str) -> Vec<Value> {
    let rows = stockroom_e2e::rows(url, "SELECT event FROM outbox ORDER BY id").await;
    rows.iter().filter_map(|r| r.text(0).ok()).filter_map(|s| serde_json::from_str(&s).ok()).collect()
}

/// Bad queries and unreadable movement events are 4xx with a JSON error and record nothing.
async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_aggregator(TestDb::new(backend).await).await;
    for (path, code) in [
        ("/v1/analytics/stock-health?status=sold_out", "invalid_status"),
        ("/v1/analytics/skus/A/sales?bucket=minute", "invalid_bucket"),
        ("/v1/analytics/skus/A/sales?from=yesterday", "invalid_time"),
        ("/v1/analytics/skus/A/sales?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "invalid_span"),
        ("/v1/analytics/skus/A/sales?bucket=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "span_too_long"),
        ("/v1/analytics/top-sellers?window=1y", "invalid_window"),
        ("/v1/analytics/top-sellers?limit=0", "invalid_limit"),
        ("/v1/analytics/top-sellers?limit=101", "invalid_limit"),
        ("/v1/analytics/top-sellers?limit=ten", "invalid_limit"),
        ("/v1/analytics/top-sellers?limit=", "invalid_limit"),
        // Bucket starts in year -1 (the default span before `to`) or 10000 cannot be written in RFC 3339.
        ("/v1/analytics/skus/A/sales?to=0000-01-01T00:00:00Z", "invalid_time"),
        (
            "/v1/analytics/skus/A/sales?bucket=day&from=9999-12-31T20:00:00-05:00&to=9999-12-31T23:00:00-05:00",
            "invalid_time",
        ),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.error_code(), code, "{path}: {}", r.body);
    }
    // Names are checked as everywhere else in the API.
    let r = app.get("/v1/analytics/stock-health?location=no%20spaces").await;
    assert_eq!((r.status, r.error_code()), (422, "invalid_location"), "{}", r.body);
    let r = app.get("/v1/analytics/skus/bad%20sku/sales").await;
    assert_eq!((r.status, r.error_code()), (422, "invalid_sku"), "{}", r.body);

    let mut broken = movement_event("broken", &history()[0], Utc::now());
    broken["data"]["movement"]["at"] = json!("not a time");
    let r = post_structured(&app, &broken).await;
    assert_eq!((r.status, r.error_code()), (422, "invalid_event"), "{}", r.body);
    broken["data"] = json!({ "movement": null });
    assert_eq!(post_structured(&app, &broken).await.status, 422);
    let r = app.send("POST", "/events", &[("content-type", "application/cloudevents+json")], Some(b"{".to_vec())).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(count_rows(&app.db.url, "SELECT COUNT(*) FROM analytics_events").await, 0);
    // An event of a type without a movement is kept raw and counts for nothing.
    let other = json!({
        "specversion": "1.0", "id": "r1", "source": "//stockroom/reconciler", "type": "dev.stockroom.reconciliation.completed.v1",
        "datacontenttype": "application/json", "data": { "file": "x.csv", "rows": 0, "applied": false, "differences": [] },
    });
    assert_eq!(post_structured(&app, &other).await.status, 200);
    assert_eq!(app.get("/v1/analytics/stock-health").await.body, json!([]));
}

/// A sale through the API: a hold, committed.
async fn sell(api: &Api, reservation_id: &str, sku: &str, quantity: i64) {
    let body = json!({ "reservation_id": reservation_id, "lines": [{ "sku": sku, "quantity": quantity }] });
    let r = api.json("POST", "/v1/reservations", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.json("POST", &format!("/v1/reservations/{reservation_id}/commit"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// In `stockroom serve`, real sales through the API reach the figures and the feed; the contract allows 5 s.
async fn live_sales_reach_analytics_within_seconds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut feed = app.subscribe("").await;
    app.location("main", 1).await;
    assert_eq!(app.receive("LIVE", "main", 10).await.status, 200);
    sell(&app, "live-1", "LIVE", 4).await;
    let sold = Instant::now();
    let figures = loop {
        let health = app.get("/v1/analytics/stock-health").await;
        let live = row(&health.body, "LIVE").clone();
        if live["units_sold_24h"] == 4 {
            break live;
        }
        assert!(sold.elapsed() < Duration::from_secs(5), "not in the figures 5 s after the sale: {}", health.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(figures["available"], 6);
    // 4 a week: 6 units last 10.5 days.
    assert_eq!(figures["days_of_cover"], 10.5);
    assert_eq!(figures["status"], "ok");

    // Selling the rest crosses into depleted: the feed tells it, once.
    sell(&app, "live-2", "LIVE", 6).await;
    let mut depleted = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match feed.next(Duration::from_millis(500)).await {
            Some(e) if e.data["type"] == "dev.stockroom.stock.depleted.v1" => depleted += 1,
            Some(_) => {}
            None if depleted > 0 => break,
            None => {}
        }
    }
    assert_eq!(depleted, 1, "one stock.depleted on the feed");
    let health = app.get("/v1/analytics/stock-health?status=depleted").await;
    assert_eq!(row(&health.body, "LIVE")["available"], 0);
}

on_every_store!(
    scripted_history_gives_known_answers,
    trailing_windows_are_exact_at_their_edges,
    each_crossing_is_told_once_under_duplicate_delivery,
    racing_causes_of_one_crossing_tell_it_once,
    shuffled_duplicated_delivery_gives_the_same_figures,
    batched_recording_leaves_the_rows_one_at_a_time_leaves,
    bad_input_is_refused_and_changes_nothing,
    live_sales_reach_analytics_within_seconds,
);
