//! The outbox's CloudEvent for a movement. Issue 3's relay publishes these as they are.

use serde_json::{Value, json};
use stockroom_domain::{Levels, Movement, MovementKind, Timestamp};

use crate::model::Delivery;

/// The CloudEvent type each movement kind leaves as.
pub fn event_type(kind: MovementKind) -> &'static str {
    match kind {
        MovementKind::Adjustment => "dev.stockroom.stock.changed.v1",
        MovementKind::Hold => "dev.stockroom.reservation.held.v1",
        MovementKind::Commit => "dev.stockroom.reservation.committed.v1",
        MovementKind::Fulfil => "dev.stockroom.reservation.fulfilled.v1",
        MovementKind::Release => "dev.stockroom.reservation.released.v1",
        MovementKind::Expire => "dev.stockroom.reservation.expired.v1",
    }
}

/// A structured-mode CloudEvent: `id` is the movement id, so it stays the same however often it is relayed.
pub fn movement_event(m: &Movement, origin: &str, after: &Levels) -> Value {
    json!({
        "specversion": "1.0",
        "id": m.id,
        "source": format!("//stockroom/{origin}"),
        "type": event_type(m.kind),
        "subject": m.sku,
        "time": m.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": {
            "movement": m,
            "levels": {
                "on_hand": after.on_hand, "reserved": after.reserved, "committed": after.committed,
                "safety_stock": after.safety_stock, "available": after.available(),
            },
        },
    })
}

/// A command that arrived as an event and was refused: acknowledged, and told to whoever listens.
pub fn refused_event(
    id: &str,
    subject: &str,
    delivery: &Delivery,
    reservation_id: Option<String>,
    error: &Value,
    now: Timestamp,
) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "//stockroom/stock-updates",
        "type": "dev.stockroom.reservation.refused.v1",
        "subject": subject,
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": {
            "command_type": delivery.command_type,
            "command_id": delivery.command_id,
            "reservation_id": reservation_id,
            "error": error,
        },
    })
}

/// `stock.low`, `stock.depleted` or `stock.replenished`: a sku's health crossed into `h.status` from `before`.
/// Published by the aggregator, which judges health.
pub fn threshold_event(
    id: &str,
    h: &stockroom_domain::analytics::Health,
    before: stockroom_domain::analytics::HealthStatus,
    t: stockroom_domain::analytics::Thresholds,
    movement_id: Option<&str>,
    now: Timestamp,
) -> Value {
    use stockroom_domain::analytics::HealthStatus;
    let ty = match h.status {
        HealthStatus::Low => "dev.stockroom.stock.low.v1",
        HealthStatus::Depleted => "dev.stockroom.stock.depleted.v1",
        HealthStatus::Ok => "dev.stockroom.stock.replenished.v1",
    };
    let time = |t: Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "//stockroom/aggregator",
        "type": ty,
        "subject": h.sku,
        "time": time(now),
        "datacontenttype": "application/json",
        "data": {
            "sku": h.sku,
            "location": null,
            "available": h.available,
            "velocity_per_day": h.velocity_per_day,
            "days_of_cover": h.days_of_cover,
            "projected_stockout_at": h.projected_stockout_at.map(time),
            "status": h.status.as_str(),
            "previous_status": before.as_str(),
            "low_stock_days": t.low_stock_days,
            "reorder_point": t.reorder_point,
            "movement_id": movement_id,
        },
    })
}
