//! The event catalogue. Every type here has a JSON Schema under `schemas/` and an example under `examples/`;
//! `tests/catalogue.rs` validates each example against its schema and round-trips it through its type.
//!
//! Commands travel on the `inventory-commands` topic as CloudEvents whose `type` is one of [`command`]'s
//! constants and whose data is the matching struct. Events leave on `inventory-events` (see [`event`]).

pub mod command;
pub mod event;
