//! The transactional outbox: every movement has exactly one CloudEvent waiting to leave, written with it, whose
//! id is the movement's id and whose figures are the row's levels right after that movement.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use std::time::Duration;

use stockroom_e2e::{Backend, TestApp};
use stockroom_events::event as ev;

on_every_store!(
    every_movement_has_exactly_one_outbox_event_with_its_id_and_levels,
    every_event_the_suite_emits_is_valid_against_its_schema,
);

async fn outbox_events(url: &str) -> Vec<Value> {
    let rows = stockroom_e2e::rows(url, "SELECT id, sku, event FROM outbox ORDER BY id").await;
    rows.iter()
        .map(|r| {
            let (id, sku) = (r.text(0).expect("an id"), r.text(1).expect("a sku"));
            let event: Value = serde_json::from_str(&r.text(2).expect("an event")).expect("event JSON");
            assert_eq!(event["id"].as_str(), Some(id.as_str()), "row id is the event id");
            assert_eq!(event["subject"].as_str(), Some(sku.as_str()), "ordering key is the sku");
            event
        })
        .collect()
}

async fn every_movement_has_exactly_one_outbox_event_with_its_id_and_levels(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    app.location("b", 2).await;
    app.receive("EV", "a", 2).await;
    app.receive("EV", "b", 5).await;
    let held = app
        .json(
            "POST",
            "/v1/reservations",
            &json!({ "reservation_id": "ev-1", "lines": [{ "sku": "EV", "quantity": 4 }] }),
        )
        .await;
    assert_eq!(held.status, 201);
    assert_eq!(
        app.json("POST", "/v1/reservations/ev-1/commit", &json!({ "lines": [{ "sku": "EV", "quantity": 3 }] }))
            .await
            .status,
        200
    );
    assert_eq!(app.send("POST", "/v1/reservations/ev-1/fulfil", &[], None).await.status, 200);
    // A refusal writes no movement and no event.
    assert_eq!(app.hold("EV", 1_000).await.status, 409);

    let movements = app.all_movements("").await;
    let events = outbox_events(&app.db.url).await;
    assert_eq!(events.len(), movements.len(), "one event per movement");
    let kinds = ["adjustment", "adjustment", "hold", "hold", "commit", "commit", "release", "fulfil", "fulfil"];
    assert_eq!(movements.iter().map(|m| m["kind"].as_str().unwrap_or("")).collect::<Vec<_>>(), kinds);

    let mut running: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for (m, e) in movements.iter().zip(&events) {
        assert_eq!(e["id"], m["id"]);
        assert_eq!(e["specversion"], "1.0");
        let expected_type = match m["kind"].as_str().unwrap_or("") {
            "adjustment" => "dev.stockroom.stock.changed.v1",
            "hold" => "dev.stockroom.reservation.held.v1",
            "commit" => "dev.stockroom.reservation.committed.v1",
            "fulfil" => "dev.stockroom.reservation.fulfilled.v1",
            "release" => "dev.stockroom.reservation.released.v1",
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(e["type"], expected_type);
        let source = if m["kind"] == "adjustment" { "//stockroom/stock-updates" } else { "//stockroom/reservations" };
        assert_eq!(e["source"], source);
        assert_eq!(e["subject"], "EV");
        assert_eq!(e["data"]["movement"]["id"], m["id"]);
        let loc = m["location"].as_str().unwrap_or("").to_owned();
        let r = running.entry(loc).or_default();
        r.0 += m["on_hand_delta"].as_i64().unwrap_or(0);
        r.1 += m["reserved_delta"].as_i64().unwrap_or(0);
        r.2 += m["committed_delta"].as_i64().unwrap_or(0);
        let levels = &e["data"]["levels"];
        assert_eq!(
            (levels["on_hand"].as_i64(), levels["reserved"].as_i64(), levels["committed"].as_i64()),
            (Some(r.0), Some(r.1), Some(r.2)),
            "levels right after movement {}",
            m["id"]
        );
    }
}

/// The catalogue's schemas hold for what the suite really emits: a shop's day through the API and an event
/// command, every event read back from the outbox and validated against the schema of its type.
async fn every_event_the_suite_emits_is_valid_against_its_schema(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("a", 1).await;
    let policy = app.json("PUT", "/v1/skus/SCHEMA/policy", &json!({ "reorder_point": 5 })).await;
    assert_eq!(policy.status, 200, "{policy:?}");
    app.receive("SCHEMA", "a", 10).await;
    let hold = |id: &str, quantity: i64| json!({ "reservation_id": id, "lines": [{ "sku": "SCHEMA", "quantity": quantity }], "ttl_seconds": 60 });
    for (path, body, status) in [
        ("/v1/reservations", hold("sold", 3), 201),
        ("/v1/reservations/sold/commit", json!({}), 200),
        ("/v1/reservations/sold/fulfil", json!({}), 200),
        // Available 1: low (at or under the reorder point), then ok again, then depleted.
        ("/v1/reservations", hold("cancelled", 6), 201),
        ("/v1/reservations/cancelled/release", json!({}), 200),
        ("/v1/reservations", hold("lapsing", 7), 201),
    ] {
        let r = app.json("POST", path, &body).await;
        assert_eq!(r.status, status, "{path}: {r:?}");
        // Health is judged per relayed batch: let each step's movements reach the aggregator on their own.
        relayed(&app).await;
    }
    app.advance(Duration::from_secs(61));
    let expired = app.send("POST", "/jobs/expire-reservations", &[("x-cloudscheduler", "true")], None).await;
    assert_eq!(expired.body, json!({ "expired": 1 }), "{expired:?}");
    let refused = app
        .command_event(
            "dev.stockroom.command.hold.v1",
            "//shop",
            "too-many",
            &json!({ "reservation_id": "too-many", "lines": [{ "sku": "SCHEMA", "quantity": 1000 }] }),
        )
        .await;
    assert_eq!(refused.body["outcome"], "refused", "{refused:?}");

    // The aggregator's alerts join the outbox as the relay hands it the movements.
    let wanted: Vec<&str> = ev::ALL.iter().copied().filter(|t| *t != ev::RECONCILIATION_COMPLETED).collect();
    let mut events = Vec::new();
    for _ in 0..200 {
        events = outbox_events(&app.db.url).await;
        if wanted.iter().all(|t| events.iter().any(|e| e["type"] == *t)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut seen = std::collections::BTreeSet::new();
    for event in &events {
        let ty = event["type"].as_str().unwrap_or_default();
        let schema: Value =
            serde_json::from_str(stockroom_events::schema(ty).unwrap_or_else(|| panic!("{ty}: no schema")))
                .expect("a schema");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> =
            validator.iter_errors(event).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{ty} as emitted breaks its schema: {errors:?}\n{event:#}");
        seen.insert(ty);
    }
    assert_eq!(seen, wanted.into_iter().collect(), "every type but reconciliation.completed (not emitted yet)");
}

/// Waits until the relay has handed every outbox event on (the aggregator records them on the way).
async fn relayed(app: &TestApp) {
    for _ in 0..400 {
        if stockroom_e2e::count_rows(&app.db.url, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the relay did not empty the outbox");
}
