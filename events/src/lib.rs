//! The event catalogue. Every type here has a JSON Schema under `schemas/` and an example under `examples/`;
//! `tests/catalogue.rs` validates each example against its schema and round-trips it through its type.
//!
//! Commands travel on the `inventory-commands` topic as CloudEvents whose `type` is one of [`command`]'s
//! constants and whose data is the matching struct. Events leave on `inventory-events` (see [`event`]). Both
//! travel in [`CloudEvent`]: every producer builds its events with it, and every type string is a constant here.

pub mod command;
pub mod envelope;
pub mod event;

pub use envelope::CloudEvent;

/// Every type's JSON Schema (draft 2020-12), as shipped in `schemas/`: for consumers that validate what they
/// receive, and for tests that hold producers to the catalogue.
pub fn schema(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "dev.stockroom.command.adjust.v1" => include_str!("../schemas/dev.stockroom.command.adjust.v1.json"),
        "dev.stockroom.command.commit.v1" => include_str!("../schemas/dev.stockroom.command.commit.v1.json"),
        "dev.stockroom.command.fulfil.v1" => include_str!("../schemas/dev.stockroom.command.fulfil.v1.json"),
        "dev.stockroom.command.hold.v1" => include_str!("../schemas/dev.stockroom.command.hold.v1.json"),
        "dev.stockroom.command.release.v1" => include_str!("../schemas/dev.stockroom.command.release.v1.json"),
        "dev.stockroom.command.sell.v1" => include_str!("../schemas/dev.stockroom.command.sell.v1.json"),
        "dev.stockroom.command.set-from-external.v1" => {
            include_str!("../schemas/dev.stockroom.command.set-from-external.v1.json")
        }
        "dev.stockroom.reconciliation.completed.v1" => {
            include_str!("../schemas/dev.stockroom.reconciliation.completed.v1.json")
        }
        "dev.stockroom.reservation.committed.v1" => {
            include_str!("../schemas/dev.stockroom.reservation.committed.v1.json")
        }
        "dev.stockroom.reservation.expired.v1" => include_str!("../schemas/dev.stockroom.reservation.expired.v1.json"),
        "dev.stockroom.reservation.fulfilled.v1" => {
            include_str!("../schemas/dev.stockroom.reservation.fulfilled.v1.json")
        }
        "dev.stockroom.reservation.held.v1" => include_str!("../schemas/dev.stockroom.reservation.held.v1.json"),
        "dev.stockroom.reservation.refused.v1" => include_str!("../schemas/dev.stockroom.reservation.refused.v1.json"),
        "dev.stockroom.reservation.released.v1" => {
            include_str!("../schemas/dev.stockroom.reservation.released.v1.json")
        }
        "dev.stockroom.stock.changed.v1" => include_str!("../schemas/dev.stockroom.stock.changed.v1.json"),
        "dev.stockroom.stock.depleted.v1" => include_str!("../schemas/dev.stockroom.stock.depleted.v1.json"),
        "dev.stockroom.stock.low.v1" => include_str!("../schemas/dev.stockroom.stock.low.v1.json"),
        "dev.stockroom.stock.replenished.v1" => include_str!("../schemas/dev.stockroom.stock.replenished.v1.json"),
        _ => return None,
    })
}
