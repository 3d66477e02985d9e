//! The CloudEvents the store writes to its outbox, built with the catalogue's own types (`stockroom_events`), so
//! what leaves is what the schemas describe.

use serde_json::Value;
use stockroom_domain::analytics::{Health, HealthStatus, Thresholds};
use stockroom_domain::{Levels, Movement, MovementKind, Timestamp};
use stockroom_events::event::{self as ev, MovementData, RefusedData, StockThresholdData};
use stockroom_events::{CloudEvent, envelope};

use crate::error::StoreError;
use crate::model::Delivery;

/// The CloudEvent type each movement kind leaves as.
pub fn event_type(kind: MovementKind) -> &'static str {
    match kind {
        MovementKind::Adjustment => ev::STOCK_CHANGED,
        MovementKind::Hold => ev::RESERVATION_HELD,
        MovementKind::Commit => ev::RESERVATION_COMMITTED,
        MovementKind::Fulfil => ev::RESERVATION_FULFILLED,
        MovementKind::Release => ev::RESERVATION_RELEASED,
        MovementKind::Expire => ev::RESERVATION_EXPIRED,
    }
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A movement's event: `id` is the movement id, so it stays the same however often it is relayed; the data
/// carries the row's figures right after the movement.
pub fn movement_event(m: &Movement, origin: &str, after: &Levels) -> Result<Value, StoreError> {
    // The domain's movement, read as the catalogue's: a field one has and the other lacks is a bug, found here.
    let movement = serde_json::to_value(m)
        .and_then(serde_json::from_value::<ev::Movement>)
        .map_err(|e| StoreError::Corrupt(format!("a movement the catalogue cannot carry: {e}")))?;
    let levels = ev::Levels {
        on_hand: after.on_hand,
        reserved: after.reserved,
        committed: after.committed,
        safety_stock: after.safety_stock,
        available: after.available(),
    };
    Ok(CloudEvent::new(event_type(m.kind), m.id.clone(), envelope::source(origin), MovementData { movement, levels })
        .with_subject(m.sku.as_str())
        .with_time(time(m.at))
        .to_value())
}

/// A command that arrived as an event and was refused: acknowledged, and told to whoever listens. `error` is the
/// body a client would have been answered.
pub fn refused_event(
    id: &str,
    subject: &str,
    delivery: &Delivery,
    reservation_id: Option<String>,
    error: &Value,
    now: Timestamp,
) -> Value {
    let data = RefusedData {
        command_type: delivery.command_type.clone(),
        command_id: delivery.command_id.clone(),
        reservation_id,
        error: error.clone(),
    };
    CloudEvent::new(ev::RESERVATION_REFUSED, id, envelope::source("stock-updates"), data)
        .with_subject(subject)
        .with_time(time(now))
        .to_value()
}

/// `stock.low`, `stock.depleted` or `stock.replenished`: a sku's health crossed into `h.status` from `before`.
/// Published by the aggregator, which judges health.
pub fn threshold_event(
    id: &str,
    h: &Health,
    before: HealthStatus,
    t: Thresholds,
    movement_id: Option<&str>,
    now: Timestamp,
) -> Value {
    let ty = match h.status {
        HealthStatus::Low => ev::STOCK_LOW,
        HealthStatus::Depleted => ev::STOCK_DEPLETED,
        HealthStatus::Ok => ev::STOCK_REPLENISHED,
    };
    let data = StockThresholdData {
        sku: h.sku.clone(),
        location: None,
        available: h.available,
        velocity_per_day: h.velocity_per_day,
        days_of_cover: h.days_of_cover,
        projected_stockout_at: h.projected_stockout_at.map(time),
        status: h.status.as_str().to_owned(),
        previous_status: before.as_str().to_owned(),
        low_stock_days: t.low_stock_days,
        reorder_point: t.reorder_point,
        movement_id: movement_id.map(str::to_owned),
    };
    CloudEvent::new(ty, id, envelope::source("aggregator"), data)
        .with_subject(h.sku.as_str())
        .with_time(time(now))
        .to_value()
}

/// The producers' own output against the catalogue's schemas (the events crate checks its examples; this checks
/// what the store really writes).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stockroom_domain::{Deltas, Location, Sku};

    fn at() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2025-05-12T09:41:27.305118Z").map(|t| t.to_utc()).unwrap_or_default()
    }

    fn assert_valid(event: &Value) {
        let ty = event["type"].as_str().unwrap_or_default();
        let schema: Value = serde_json::from_str(stockroom_events::schema(ty).unwrap_or("{}")).unwrap_or_default();
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let errors: Vec<String> =
            validator.iter_errors(event).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{ty}: {errors:?}\n{event:#}");
    }

    #[test]
    fn every_movement_event_the_store_writes_is_valid_against_its_schema() {
        // What each kind moves, as the ledger moves it.
        for (kind, (on_hand, reserved, committed)) in [
            (MovementKind::Adjustment, (4, 0, 0)),
            (MovementKind::Hold, (0, 2, 0)),
            (MovementKind::Commit, (0, -2, 2)),
            (MovementKind::Fulfil, (-2, 0, -2)),
            (MovementKind::Release, (0, -2, 0)),
            (MovementKind::Expire, (0, -2, 0)),
        ] {
            let m = Movement {
                id: "0196a1e4-3c2b-7d85-9a4f-1e6b0c7d2f93".into(),
                at: at(),
                sku: Sku::parse("HOODIE-GRY-L").unwrap_or_else(|e| panic!("{e}")),
                location: Location::parse("wh-dublin").unwrap_or_else(|e| panic!("{e}")),
                kind,
                deltas: Deltas { on_hand, reserved, committed },
                reason: kind.as_str().into(),
                reference: Some("order-1".into()),
                cause: Some("reservation:cart-4be1d07c".into()),
            };
            let after = Levels { on_hand: 14, reserved: 5, committed: 1, safety_stock: 1 };
            let event = movement_event(&m, "reservations", &after).unwrap_or_else(|e| panic!("{e}"));
            assert_valid(&event);
            assert_eq!((&event["id"], &event["data"]["movement"]["id"]), (&json!(m.id), &json!(m.id)));
            assert_eq!(event["data"]["levels"]["available"], 7);
        }
    }

    #[test]
    fn a_refused_event_the_store_writes_is_valid_against_its_schema() {
        let delivery = Delivery {
            command_type: "dev.stockroom.command.hold.v1".into(),
            command_id: "//shop#11437829202749118".into(),
        };
        let error = json!({ "error": "insufficient_stock", "message": "not enough stock for 1 line(s)",
                            "shortfalls": [{ "sku": "HOODIE-GRY-L", "requested": 9, "available": 7 }] });
        assert_valid(&refused_event(
            "0196a1e5-0d7e-7c41-b3a2-8f5e9d0c1b64",
            "cart-1",
            &delivery,
            Some("cart-1".into()),
            &error,
            at(),
        ));
        assert_valid(&refused_event("0196a1e5-0d7e-7c41-b3a2-8f5e9d0c1b65", "SKU-1", &delivery, None, &error, at()));
    }

    #[test]
    fn every_threshold_event_the_store_writes_is_valid_against_its_schema() {
        // As the domain derives them: no sales, no cover.
        for (status, available, velocity, cover) in [
            (HealthStatus::Low, 5, 2.0, Some(2.5)),
            (HealthStatus::Depleted, 0, 2.0, Some(0.0)),
            (HealthStatus::Ok, 40, 2.0, Some(20.0)),
            (HealthStatus::Ok, 40, 0.0, None),
        ] {
            let h = Health {
                sku: "MUG".into(),
                available,
                units_sold_24h: 3,
                units_sold_7d: 14,
                velocity_per_day: velocity,
                days_of_cover: cover,
                projected_stockout_at: cover.map(|_| at()),
                status,
            };
            let t = Thresholds { low_stock_days: 7, reorder_point: Some(3) };
            for before in
                [HealthStatus::Ok, HealthStatus::Low, HealthStatus::Depleted].into_iter().filter(|b| *b != status)
            {
                assert_valid(&threshold_event(
                    "0196a1e5-0d7e-7c41-b3a2-8f5e9d0c1b66",
                    &h,
                    before,
                    t,
                    Some("m-1"),
                    at(),
                ));
                assert_valid(&threshold_event("0196a1e5-0d7e-7c41-b3a2-8f5e9d0c1b67", &h, before, t, None, at()));
            }
        }
    }
}
