#![cfg(feature = "bigquery")]
//! BigQuery analytics over the wire: the schema, streaming and the views against a BigQuery emulator
//! (`scripts/bigquery-emulator`, which prints the `BIGQUERY_EMULATOR_HOST` to run with), the same events through
//! the embedded store for the parity of every answer, and failures through a loopback server of our own that
//! fails chosen requests (an emulator cannot be told to).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use stockroom_domain::analytics::{Bucket, Health, HealthStatus, SalesPoint, TopSeller, Window};
use stockroom_domain::{Sku, Timestamp};
use stockroom_gcp::{BigQuery, BigQueryConfig, QueryParam};
use stockroom_store::{
    AnalyticsReader, AnalyticsRecorder, AnalyticsSink, Ledger, ManualClock, ObservedEvent, ObservedMovement,
    PolicyUpdate, SqlStore, StoreError, StoreSettings,
};

// ---------------------------------------------------------------------------------------------------------------
// Against the emulator
// ---------------------------------------------------------------------------------------------------------------

const PROJECT: &str = "stockroom-test";

/// The emulator's base URL. Unset is a failure, not a skip: this file is only run with `--features bigquery`, by
/// `.ci/run`, after it started the emulator.
fn emulator() -> String {
    match std::env::var("BIGQUERY_EMULATOR_HOST") {
        Ok(host) if !host.trim().is_empty() => {
            let host = host.trim();
            if host.contains("://") { host.to_owned() } else { format!("http://{host}") }
        }
        _ => panic!(
            "BIGQUERY_EMULATOR_HOST is not set: start the emulator with `scripts/bigquery-emulator` and run these \
             tests with the BIGQUERY_EMULATOR_HOST=http://host:port line it prints"
        ),
    }
}

/// A dataset of its own for each test (and each run), so that no table is shared.
fn unique_dataset(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("sr_{test}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A client on a fresh dataset with the schema applied.
async fn bigquery(test: &str) -> BigQuery {
    let config = BigQueryConfig {
        endpoint: emulator(),
        timeout_ms: 30_000,
        retries_max: 2,
        ..BigQueryConfig::new(PROJECT, unique_dataset(test))
    };
    let bq = BigQuery::new(config, reqwest::Client::new());
    bq.apply_schema().await.unwrap_or_else(|e| panic!("apply_schema: {e:?}"));
    bq
}

async fn count(bq: &BigQuery, sql: &str) -> i64 {
    let rows = bq.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows[0].int("n").unwrap().unwrap()
}

fn at(now: Timestamp, ago: TimeDelta) -> Timestamp {
    now - ago
}

/// A movement event as the aggregator sees it: the CloudEvent (as the outbox writes it) and its movement.
#[allow(clippy::too_many_arguments)]
fn movement_event(
    id: &str,
    at: Timestamp,
    sku: &str,
    location: &str,
    kind: &str,
    deltas: (i64, i64, i64),
    cause: Option<&str>,
    levels: (i64, i64, i64, i64),
) -> ObservedEvent {
    let (on_hand_delta, reserved_delta, committed_delta) = deltas;
    let (on_hand, reserved, committed, safety_stock) = levels;
    let available = on_hand - reserved - committed - safety_stock;
    let ty = match kind {
        "hold" => "dev.stockroom.reservation.held.v1",
        "commit" => "dev.stockroom.reservation.committed.v1",
        "fulfil" => "dev.stockroom.reservation.fulfilled.v1",
        "release" => "dev.stockroom.reservation.released.v1",
        _ => "dev.stockroom.stock.changed.v1",
    };
    let time = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = json!({
        "specversion": "1.0", "id": id, "source": "//stockroom/test", "type": ty, "subject": sku, "time": time,
        "datacontenttype": "application/json",
        "data": {
            "movement": {"id": id, "at": time, "sku": sku, "location": location, "kind": kind,
                         "deltas": {"on_hand": on_hand_delta, "reserved": reserved_delta, "committed": committed_delta},
                         "reason": kind, "cause": cause},
            "levels": {"on_hand": on_hand, "reserved": reserved, "committed": committed,
                       "safety_stock": safety_stock, "available": available},
        },
    });
    ObservedEvent {
        id: id.to_owned(),
        ty: ty.to_owned(),
        body,
        movement: Some(ObservedMovement {
            id: id.to_owned(),
            at,
            sku: sku.to_owned(),
            location: location.to_owned(),
            kind: kind.to_owned(),
            on_hand_delta,
            reserved_delta,
            committed_delta,
            cause: cause.map(str::to_owned),
            on_hand,
            reserved,
            committed,
            safety_stock,
            available,
        }),
    }
}

/// A sale of `units` at one location, committed straight from `levels_after` (the hold is left out).
fn commit(
    id: &str,
    at: Timestamp,
    sku: &str,
    location: &str,
    units: i64,
    order: &str,
    after: (i64, i64, i64, i64),
) -> ObservedEvent {
    movement_event(id, at, sku, location, "commit", (0, 0, units), Some(&format!("reservation:{order}")), after)
}

fn receive(
    id: &str,
    at: Timestamp,
    sku: &str,
    location: &str,
    units: i64,
    after: (i64, i64, i64, i64),
) -> ObservedEvent {
    movement_event(id, at, sku, location, "adjustment", (units, 0, 0), Some("adjustment:delivery"), after)
}

/// The scripted history of the parity test, in the order it is delivered (not quite time order; one event twice).
/// Levels are `(on_hand, reserved, committed, safety_stock)` right after each movement.
fn history(now: Timestamp) -> Vec<ObservedEvent> {
    let h = TimeDelta::hours;
    let d = TimeDelta::days;
    let s = TimeDelta::seconds;
    let mut events = vec![
        // A-LOW at wh-a and wh-b: 14 net units in the trailing 7 days (2 a day), 9 available: 4.5 days of cover.
        receive("a-01", at(now, d(10)), "A-LOW", "wh-a", 20, (20, 0, 0, 0)),
        receive("a-02", at(now, d(10) - s(60)), "A-LOW", "wh-b", 8, (8, 0, 0, 0)),
        commit("a-03", at(now, d(8)), "A-LOW", "wh-a", 5, "a0", (20, 0, 5, 0)), // before the 7 days
        // One order split across both locations: one order, 6 units.
        commit("a-04", at(now, d(3)), "A-LOW", "wh-a", 4, "a1", (20, 0, 9, 0)),
        commit("a-05", at(now, d(3)), "A-LOW", "wh-b", 2, "a1", (8, 0, 2, 0)),
        commit("a-06", at(now, h(30)), "A-LOW", "wh-a", 6, "a2", (20, 0, 15, 0)),
        movement_event("a-07", at(now, h(2)), "A-LOW", "wh-b", "hold", (0, 3, 0), Some("reservation:a3"), (8, 3, 2, 0)),
        movement_event(
            "a-08",
            at(now, h(2) - s(1)),
            "A-LOW",
            "wh-b",
            "commit",
            (0, -3, 3),
            Some("reservation:a3"),
            (8, 0, 5, 0),
        ),
        // A return of one unit of a2: -1 sold.
        movement_event(
            "a-09",
            at(now, h(1)),
            "A-LOW",
            "wh-a",
            "release",
            (0, 0, -1),
            Some("reservation:a2"),
            (20, 0, 14, 0),
        ),
        // Shipped: leaves on_hand and committed, not a return.
        movement_event(
            "a-10",
            at(now, h(1) - s(2)),
            "A-LOW",
            "wh-b",
            "fulfil",
            (-2, 0, -2),
            Some("reservation:a1"),
            (6, 0, 3, 0),
        ),
        // B-OK: the same 2 a day and 4.5 days of cover, but its low_stock_days is 3.
        receive("b-01", at(now, d(9)), "B-OK", "wh-a", 23, (23, 0, 0, 0)),
        commit("b-02", at(now, d(3) + h(5)), "B-OK", "wh-a", 7, "b1", (23, 0, 7, 0)),
        commit("b-03", at(now, h(2) + s(30)), "B-OK", "wh-a", 7, "b2", (23, 0, 14, 0)),
        // C-DEPLETED: sold out 30 hours ago.
        receive("c-01", at(now, d(5)), "C-DEPLETED", "wh-b", 5, (5, 0, 0, 0)),
        commit("c-02", at(now, h(30) + s(5)), "C-DEPLETED", "wh-b", 5, "c1", (5, 0, 5, 0)),
        // D-REORDER: no sales, at its reorder point of 10.
        receive("d-01", at(now, d(4)), "D-REORDER", "wh-a", 10, (10, 0, 0, 0)),
        // E-NOSALES: its only sale is older than 7 days.
        receive("e-01", at(now, d(12)), "E-NOSALES", "wh-b", 50, (50, 0, 0, 0)),
        commit("e-02", at(now, d(8) + h(3)), "E-NOSALES", "wh-b", 2, "e1", (50, 0, 2, 0)),
        // F-RETURNED: sold before the 7 days, all returned within them: -3, velocity 0, no top seller.
        receive("f-01", at(now, d(9)), "F-RETURNED", "wh-a", 10, (10, 0, 0, 0)),
        commit("f-02", at(now, d(8)), "F-RETURNED", "wh-a", 3, "f1", (10, 0, 3, 0)),
        movement_event(
            "f-03",
            at(now, d(2)),
            "F-RETURNED",
            "wh-a",
            "release",
            (0, 0, -3),
            Some("reservation:f1"),
            (10, 0, 0, 0),
        ),
        // A hold that lapsed: not a sale.
        movement_event(
            "f-04",
            at(now, h(5)),
            "F-RETURNED",
            "wh-a",
            "hold",
            (0, 2, 0),
            Some("reservation:f2"),
            (10, 2, 0, 0),
        ),
        movement_event(
            "f-05",
            at(now, h(4)),
            "F-RETURNED",
            "wh-a",
            "expire",
            (0, -2, 0),
            Some("reservation:f2"),
            (10, 0, 0, 0),
        ),
    ];
    // An event without a movement (a threshold event): recorded, counted nowhere.
    events.push(ObservedEvent {
        id: "t-01".to_owned(),
        ty: "dev.stockroom.stock.low.v1".to_owned(),
        body: json!({"specversion": "1.0", "id": "t-01", "type": "dev.stockroom.stock.low.v1", "subject": "A-LOW",
                     "time": now.to_rfc3339(), "data": {"sku": "A-LOW"}}),
        movement: None,
    });
    // Delivered twice (at least once delivery), and out of time order.
    events.push(events[5].clone());
    events.swap(3, 8);
    events
}

/// Policies: B-OK is low under 3 days of cover, D-REORDER at or under 10 available.
async fn put_policies(store: &SqlStore, bq: &BigQuery, now: Timestamp) {
    let b = store
        .put_policy(Sku::parse("B-OK").unwrap(), PolicyUpdate { low_stock_days: Some(Some(3)), ..Default::default() })
        .await
        .unwrap();
    let d = store
        .put_policy(
            Sku::parse("D-REORDER").unwrap(),
            PolicyUpdate { reorder_point: Some(Some(10)), ..Default::default() },
        )
        .await
        .unwrap();
    // An older policy of B's that the newer row overrides.
    let old_b = stockroom_store::Policy { low_stock_days: Some(30), ..b.clone() };
    bq.put_policies(&[old_b], now - TimeDelta::minutes(5)).await.unwrap();
    bq.put_policies(&[b, d], now).await.unwrap();
}

fn assert_same_health(bigquery: &[Health], embedded: &[Health], what: &str) {
    let skus = |h: &[Health]| h.iter().map(|h| h.sku.clone()).collect::<Vec<_>>();
    assert_eq!(skus(bigquery), skus(embedded), "{what}: skus\nbigquery: {bigquery:#?}\nembedded: {embedded:#?}");
    for (b, e) in bigquery.iter().zip(embedded) {
        let whose = format!("{what}, {}", b.sku);
        assert_eq!(
            (b.available, b.units_sold_24h, b.units_sold_7d, b.status),
            (e.available, e.units_sold_24h, e.units_sold_7d, e.status),
            "{whose}: figures and status\nbigquery: {bigquery:#?}\nembedded: {embedded:#?}"
        );
        assert!((b.velocity_per_day - e.velocity_per_day).abs() < 1e-9, "{whose}: velocity {b:?} vs {e:?}");
        match (b.days_of_cover, e.days_of_cover) {
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "{whose}: cover {x} vs {y}"),
            (x, y) => assert_eq!(x, y, "{whose}: cover"),
        }
        match (b.projected_stockout_at, e.projected_stockout_at) {
            // Each side reads its own clock: BigQuery's query runs a moment after the embedded `now`.
            (Some(x), Some(y)) => assert!((x - y).num_milliseconds().abs() <= 2_000, "{whose}: stock-out {x} vs {y}"),
            (x, y) => assert_eq!(x, y, "{whose}: stock-out"),
        }
    }
}

/// BigQuery's stock health, and the embedded store's as of the middle of BigQuery's query: BigQuery's views read
/// its own clock, and a loaded emulator takes a while to answer. Also that middle.
async fn both_health(bq: &BigQuery, store: &SqlStore, location: Option<&str>) -> (Vec<Health>, Vec<Health>, Timestamp) {
    let asked = Utc::now();
    let bigquery = bq.stock_health(location, asked).await.unwrap();
    let answered = Utc::now();
    let middle = asked + (answered - asked) / 2;
    let embedded = store.stock_health(location, middle).await.unwrap();
    (bigquery, embedded, middle)
}

fn health_of<'a>(rows: &'a [Health], sku: &str) -> &'a Health {
    rows.iter().find(|h| h.sku == sku).unwrap_or_else(|| panic!("no {sku} in {rows:#?}"))
}

#[tokio::test]
async fn bigquery_answers_as_the_embedded_store_does_for_the_same_events() {
    let bq = bigquery("parity").await;
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now().duration_trunc(TimeDelta::milliseconds(1)).unwrap();
    let mut settings =
        StoreSettings::new(format!("sqlite://{}", dir.path().join("a.db").display()), stockroom_runtime::render);
    // The store records (and judges thresholds) at the same instant the events are laid out from.
    settings.clock = std::sync::Arc::new(ManualClock::starting_at(now));
    let store = SqlStore::connect(&settings).await.unwrap();
    let events = history(now);

    put_policies(&store, &bq, now).await;
    bq.write(&events).await.unwrap();
    store.record_events(events).await.unwrap();

    // Stock health, over all locations and at each.
    let (bq_all, sql_all, asked_at) = both_health(&bq, &store, None).await;
    assert_same_health(&bq_all, &sql_all, "all locations");
    assert_eq!(bq_all.len(), 6, "{bq_all:#?}");
    for location in ["wh-a", "wh-b", "nowhere"] {
        let (b, e, _) = both_health(&bq, &store, Some(location)).await;
        assert_same_health(&b, &e, location);
    }

    // Known answers, so that both paths being wrong the same way still fails.
    for rows in [&bq_all, &sql_all] {
        let a = health_of(rows, "A-LOW");
        assert_eq!((a.available, a.units_sold_24h, a.units_sold_7d), (9, 2, 14), "{a:?}");
        assert_eq!((a.velocity_per_day, a.days_of_cover, a.status), (2.0, Some(4.5), HealthStatus::Low), "{a:?}");
        let projected = a.projected_stockout_at.unwrap();
        let expected = asked_at.duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::hours(108);
        assert!((projected - expected).num_seconds().abs() <= 2, "{projected} vs {expected}");
        let b = health_of(rows, "B-OK");
        assert_eq!((b.available, b.days_of_cover, b.status), (9, Some(4.5), HealthStatus::Ok), "{b:?}");
        let c = health_of(rows, "C-DEPLETED");
        assert_eq!((c.available, c.units_sold_24h, c.units_sold_7d), (0, 0, 5), "{c:?}");
        assert_eq!((c.days_of_cover, c.status), (Some(0.0), HealthStatus::Depleted), "{c:?}");
        let d = health_of(rows, "D-REORDER");
        assert_eq!((d.velocity_per_day, d.days_of_cover, d.status), (0.0, None, HealthStatus::Low), "{d:?}");
        assert_eq!(d.projected_stockout_at, None);
        let e = health_of(rows, "E-NOSALES");
        assert_eq!((e.available, e.units_sold_7d, e.status), (48, 0, HealthStatus::Ok), "{e:?}");
        let f = health_of(rows, "F-RETURNED");
        assert_eq!((f.units_sold_7d, f.velocity_per_day, f.status), (-3, 0.0, HealthStatus::Ok), "{f:?}");
    }
    let wh_a = bq.stock_health(Some("wh-a"), now).await.unwrap();
    let a = health_of(&wh_a, "A-LOW");
    assert_eq!((a.available, a.units_sold_24h, a.units_sold_7d), (6, -1, 9), "{a:?}");
    assert!(wh_a.iter().all(|h| h.sku != "C-DEPLETED" && h.sku != "E-NOSALES"), "only skus stocked at wh-a");

    // Sales series, hour and day, dense.
    for sku in ["A-LOW", "B-OK", "C-DEPLETED", "F-RETURNED", "unknown"] {
        for (bucket, span) in [(Bucket::Hour, TimeDelta::hours(48)), (Bucket::Day, TimeDelta::days(30))] {
            let b = bq.sales(sku, bucket, now - span, now).await.unwrap();
            let e = store.sales(sku, bucket, now - span, now).await.unwrap();
            assert_eq!(b, e, "{sku} by {bucket:?}");
        }
    }
    let hours = bq.sales("A-LOW", Bucket::Hour, now - TimeDelta::hours(48), now).await.unwrap();
    assert_eq!(hours.len(), 49);
    let point = |series: &[SalesPoint], t: Timestamp, bucket: Bucket| {
        let start = bucket.start_of(t.timestamp_micros());
        series.iter().find(|p| p.start.timestamp_micros() == start).cloned().unwrap()
    };
    let sale = point(&hours, now - TimeDelta::hours(30), Bucket::Hour);
    assert_eq!((sale.units, sale.orders), (6, 1));
    assert_eq!(point(&hours, now - TimeDelta::hours(1), Bucket::Hour).units, -1, "the return");
    let days = bq.sales("A-LOW", Bucket::Day, now - TimeDelta::days(30), now).await.unwrap();
    assert_eq!(days.len(), 31);
    assert_eq!(days.iter().map(|p| p.units).sum::<i64>(), 5 + 6 + 6 + 3 - 1);
    assert_eq!(days.iter().map(|p| p.orders).sum::<i64>(), 4, "a0, a1 (split over two locations), a2, a3");
    assert_eq!(point(&days, now - TimeDelta::days(3), Bucket::Day).orders, 1, "a split order is one order");

    // Top sellers.
    for window in [Window::Day, Window::Week] {
        for limit in [1, 10, 1_000] {
            let b = bq.top_sellers(window, limit, now).await.unwrap();
            let e = store.top_sellers(window, limit, now).await.unwrap();
            assert_eq!(b, e, "{window:?}, limit {limit}");
        }
    }
    let row = |sku: &str, units, orders| TopSeller { sku: sku.to_owned(), units, orders };
    assert_eq!(
        bq.top_sellers(Window::Week, 10, now).await.unwrap(),
        [row("A-LOW", 14, 3), row("B-OK", 14, 2), row("C-DEPLETED", 5, 1)]
    );
    assert_eq!(bq.top_sellers(Window::Day, 10, now).await.unwrap(), [row("B-OK", 7, 1), row("A-LOW", 2, 1)]);

    // The stock series beside the sales: A's levels after the last movement of its latest day, per location and
    // summed over them.
    let sql = format!(
        "SELECT location, CAST(available AS INT64) AS available, CAST(on_hand AS INT64) AS on_hand FROM {} \
         WHERE sku = 'A-LOW' AND start = TIMESTAMP_TRUNC(@t, DAY)",
        bq.table("sales_daily")
    );
    let rows = bq.query(&sql, &[QueryParam::Timestamp("t", now - TimeDelta::hours(1))]).await.unwrap();
    let mut levels: Vec<(Option<String>, i64, i64)> = rows
        .iter()
        .map(|r| {
            (r.string("location").unwrap(), r.int("available").unwrap().unwrap(), r.int("on_hand").unwrap().unwrap())
        })
        .collect();
    levels.sort();
    assert_eq!(
        levels,
        [(None, 9, 26), (Some("wh-a".to_owned()), 6, 20), (Some("wh-b".to_owned()), 3, 6)],
        "the sku's total (location NULL), then each location"
    );
}

#[tokio::test]
async fn an_event_delivered_twice_counts_once() {
    let bq = bigquery("dedupe").await;
    let now = Utc::now();
    let sale = |id: &str, order: &str| commit(id, now - TimeDelta::hours(1), "SKU-1", "wh-a", 2, order, (10, 0, 2, 0));

    // Twice in one request, and again in another.
    bq.write(&[sale("m-1", "r1"), sale("m-2", "r2"), sale("m-1", "r1")]).await.unwrap();
    bq.write(&[sale("m-2", "r2")]).await.unwrap();

    let raw = count(&bq, &format!("SELECT COUNT(*) AS n FROM {}", bq.table("inventory_events"))).await;
    // BigQuery drops some copies by insertId (best effort); the emulator keeps them all.
    assert!((2..=4).contains(&raw), "{raw} raw rows");
    eprintln!("raw rows for 2 events written 4 times: {raw} (insertId dedupe in the emulator: {})", raw < 4);
    let deduped = count(&bq, &format!("SELECT COUNT(*) AS n FROM {}", bq.table("events_deduped"))).await;
    assert_eq!(deduped, 2);
    let top = bq.top_sellers(Window::Day, 10, now).await.unwrap();
    assert_eq!(top, [TopSeller { sku: "SKU-1".to_owned(), units: 4, orders: 2 }]);
    let health = bq.stock_health(None, now).await.unwrap();
    assert_eq!((health[0].units_sold_24h, health[0].units_sold_7d), (4, 4));

    // A policy put twice: the newest row is the policy, once.
    let policy = |days| stockroom_store::Policy {
        sku: Sku::parse("SKU-1").unwrap(),
        low_stock_days: Some(days),
        reorder_point: None,
        safety_stock: 0,
    };
    bq.put_policies(&[policy(3)], now - TimeDelta::seconds(10)).await.unwrap();
    bq.put_policies(&[policy(30)], now).await.unwrap();
    bq.put_policies(&[policy(30)], now).await.unwrap();
    let rows = bq.query(&format!("SELECT sku, low_stock_days FROM {}", bq.table("policies")), &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].int("low_stock_days").unwrap(), Some(30));
    // 8 available at 4 sold in 7 days: 14 days of cover, under 30.
    assert_eq!(bq.stock_health(None, now).await.unwrap()[0].status, HealthStatus::Low);
}

#[tokio::test]
async fn more_events_than_a_request_holds_all_arrive() {
    let bq = bigquery("batches").await;
    let now = Utc::now();
    let events: Vec<ObservedEvent> = (0..1_203)
        .map(|i| {
            receive(
                &format!("m-{i:05}"),
                now - TimeDelta::seconds(i),
                &format!("SKU-{}", i % 7),
                "wh-a",
                1,
                (i + 1, 0, 0, 0),
            )
        })
        .collect();

    bq.write(&events).await.unwrap();

    let n = count(&bq, &format!("SELECT COUNT(DISTINCT id) AS n FROM {}", bq.table("events_deduped"))).await;
    assert_eq!(n, 1_203);
    let levels = count(&bq, &format!("SELECT COUNT(*) AS n FROM {}", bq.table("stock_levels"))).await;
    assert_eq!(levels, 7);
}

#[tokio::test]
async fn applying_the_schema_again_keeps_the_data() {
    let bq = bigquery("schema").await;
    let now = Utc::now();
    bq.write(&[receive("m-1", now, "SKU-1", "wh-a", 5, (5, 0, 0, 0))]).await.unwrap();

    bq.apply_schema().await.unwrap();

    let n = count(&bq, &format!("SELECT COUNT(*) AS n FROM {}", bq.table("stock_levels"))).await;
    assert_eq!(n, 1);
    let views = [
        "events_deduped",
        "movements",
        "policies",
        "stock_levels",
        "sales_hourly",
        "sales_daily",
        "stock_health",
        "stock_health_by_location",
        "top_sellers_24h",
        "top_sellers_7d",
    ];
    for view in views {
        bq.query(&format!("SELECT * FROM {} LIMIT 1", bq.table(view)), &[])
            .await
            .unwrap_or_else(|e| panic!("{view}: {e:?}"));
    }
}

#[tokio::test]
async fn a_missing_dataset_is_a_configuration_error() {
    let config = BigQueryConfig { endpoint: emulator(), ..BigQueryConfig::new(PROJECT, unique_dataset("missing")) };
    let bq = BigQuery::new(config, reqwest::Client::new());

    let err = bq.write(&[receive("m-1", Utc::now(), "SKU-1", "wh-a", 5, (5, 0, 0, 0))]).await.expect_err("no table");
    assert!(matches!(&err, StoreError::Config(r) if r.contains("404")), "{err:?}");
    let err = bq.stock_health(None, Utc::now()).await.expect_err("no view");
    assert!(!err.is_transient(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Against a loopback server that fails chosen requests
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Answer {
    Accept,
    Status(u16),
    /// 200 with every row in `insertErrors` under this reason.
    RowErrors(&'static str),
}

/// One insertAll request seen: its insertIds, each row's `json.id`, and its size.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    insert_ids: Vec<String>,
    row_ids: Vec<String>,
    bytes: usize,
}

struct Fake {
    plan: Box<dyn Fn(usize) -> Answer + Send + Sync>,
    requests: Mutex<Vec<Seen>>,
}

async fn fake_bigquery(plan: impl Fn(usize) -> Answer + Send + Sync + 'static) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake { plan: Box::new(plan), requests: Mutex::default() });
    // Up to BigQuery's own 10 MB a request (axum's default is 2 MB).
    let app = Router::new().fallback(handle).layer(DefaultBodyLimit::max(10_000_000)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fake)
}

async fn handle(State(fake): State<Arc<Fake>>, uri: Uri, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let rows = request["rows"].as_array().cloned().unwrap_or_default();
    let n = {
        let mut requests = fake.requests.lock().unwrap();
        requests.push(Seen {
            path: uri.path().to_owned(),
            insert_ids: rows.iter().map(|r| r["insertId"].as_str().unwrap_or_default().to_owned()).collect(),
            row_ids: rows.iter().map(|r| r["json"]["id"].as_str().unwrap_or_default().to_owned()).collect(),
            bytes: body.len(),
        });
        requests.len() - 1
    };
    match (fake.plan)(n) {
        Answer::Accept => axum::Json(json!({"kind": "bigquery#tableDataInsertAllResponse"})).into_response(),
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            let body =
                json!({"error": {"code": code, "message": "planned failure", "errors": [{"reason": "planned"}]}});
            (status, axum::Json(body)).into_response()
        }
        Answer::RowErrors(reason) => {
            let errors: Vec<Value> = (0..rows.len())
                .map(|i| json!({"index": i, "errors": [{"reason": if i == 0 { reason } else { "stopped" }, "message": "planned"}]}))
                .collect();
            axum::Json(json!({"insertErrors": errors})).into_response()
        }
    }
}

fn client_at(base: &str, retries_max: u32) -> BigQuery {
    let config =
        BigQueryConfig { endpoint: base.to_owned(), retries_max, timeout_ms: 5_000, ..BigQueryConfig::new("p", "d") };
    BigQuery::new(config, reqwest::Client::new())
}

fn small_events(n: usize) -> Vec<ObservedEvent> {
    let now = Utc::now();
    (0..n).map(|i| receive(&format!("m-{i:05}"), now, "SKU-1", "wh-a", 1, (1, 0, 0, 0))).collect()
}

#[tokio::test]
async fn rows_go_in_batches_of_at_most_500_with_the_event_id_as_insert_id() {
    let (base, fake) = fake_bigquery(|_| Answer::Accept).await;
    let events = small_events(1_203);

    client_at(&base, 0).write(&events).await.unwrap();

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.iter().map(|r| r.insert_ids.len()).collect::<Vec<_>>(), [500, 500, 203]);
    let sent: Vec<String> = requests.iter().flat_map(|r| r.insert_ids.clone()).collect();
    assert_eq!(sent, events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), "in order, each once");
    assert!(requests.iter().all(|r| r.insert_ids == r.row_ids), "insertId = event id");
    assert!(requests.iter().all(|r| r.path == "/bigquery/v2/projects/p/datasets/d/tables/inventory_events/insertAll"));
}

#[tokio::test]
async fn big_events_are_batched_by_size() {
    let (base, fake) = fake_bigquery(|_| Answer::Accept).await;
    let mut events = small_events(300);
    for e in &mut events {
        e.body["data"]["padding"] = json!("x".repeat(40_000));
    }

    client_at(&base, 0).write(&events).await.unwrap();

    let requests = fake.requests.lock().unwrap().clone();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert!(
        requests.iter().all(|r| r.bytes <= 5_100_000),
        "{:?}",
        requests.iter().map(|r| r.bytes).collect::<Vec<_>>()
    );
    assert_eq!(requests.iter().map(|r| r.insert_ids.len()).sum::<usize>(), 300);
}

#[tokio::test]
async fn a_503_is_retried_and_then_the_rows_go_in() {
    let (base, fake) = fake_bigquery(|n| match n {
        0 => Answer::Status(503),
        1 => Answer::RowErrors("backendError"),
        _ => Answer::Accept,
    })
    .await;
    let events = small_events(3);

    client_at(&base, 3).write(&events).await.unwrap();

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "503, rows not taken, then accepted");
    assert!(requests.iter().all(|r| r.insert_ids.len() == 3), "the same batch each time");
}

#[tokio::test]
async fn bigquery_failing_is_transient_after_bounded_retries() {
    let (base, fake) = fake_bigquery(|_| Answer::Status(500)).await;
    let started = Instant::now();

    let err = client_at(&base, 2).write(&small_events(2)).await.expect_err("always 500");

    assert!(matches!(err, StoreError::Transient(_)) && err.is_transient(), "{err:?}");
    let reason = format!("{:?}", err);
    assert!(reason.contains("500") && reason.contains("3 attempts"), "{reason}");
    assert_eq!(fake.requests.lock().unwrap().len(), 3);
    assert!(started.elapsed() < Duration::from_secs(5), "backoff is bounded: {:?}", started.elapsed());
}

#[tokio::test]
async fn an_invalid_row_is_refused_without_a_retry() {
    let (base, fake) = fake_bigquery(|_| Answer::RowErrors("invalid")).await;

    let err = client_at(&base, 3).write(&small_events(2)).await.expect_err("invalid row");

    assert!(matches!(err, StoreError::Internal(_)) && !err.is_transient(), "{err:?}");
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}
