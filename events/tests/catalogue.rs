//! The catalogue's promise (STYLE 10): every command and event type has one JSON Schema in `schemas/` and one
//! example in `examples/`, named after the type; each example validates against its schema, and its `data`
//! round-trips through the Rust type unchanged. The schemas must also refuse what the contract forbids, and accept
//! what the store really publishes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stockroom_events::{command, event};

fn every_type() -> impl Iterator<Item = &'static str> {
    command::ALL.iter().chain(event::ALL).copied()
}

fn catalogue_dir(part: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(part)
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn schema_of(ty: &str) -> Value {
    read_json(&catalogue_dir("schemas").join(format!("{ty}.json")))
}

fn example_of(ty: &str) -> Value {
    read_json(&catalogue_dir("examples").join(format!("{ty}.json")))
}

/// Formats are assertions here, not annotations: a `time` that is not RFC 3339 must fail.
fn validator_of(ty: &str) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema_of(ty))
        .unwrap_or_else(|e| panic!("schemas/{ty}.json does not compile: {e}"))
}

fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{e} (at {})", e.instance_path())).collect()
}

fn assert_valid(ty: &str, instance: &Value) {
    let found = violations(&validator_of(ty), instance);
    assert!(found.is_empty(), "{ty}: {instance:#}\nis refused by its schema:\n{}", found.join("\n"));
}

fn file_stems(part: &str) -> BTreeSet<String> {
    let dir = catalogue_dir(part);
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .map(|name| name.strip_suffix(".json").map(str::to_owned).unwrap_or_else(|| format!("{name} (not .json)")))
        .collect()
}

fn round_trip<T: DeserializeOwned + Serialize>(ty: &str, data: &Value) -> Value {
    let typed: T = serde_json::from_value(data.clone())
        .unwrap_or_else(|e| panic!("{ty}: data does not deserialize into {}: {e}", std::any::type_name::<T>()));
    serde_json::to_value(&typed).expect("every catalogue type serializes")
}

/// `data` parsed into the Rust type of `ty` and written back out. A type added to `ALL` without a line here fails.
fn through_its_rust_type(ty: &str, data: &Value) -> Value {
    match ty {
        command::ADJUST => round_trip::<command::Adjust>(ty, data),
        command::HOLD | command::SELL => round_trip::<command::Hold>(ty, data),
        command::COMMIT => round_trip::<command::Commit>(ty, data),
        command::FULFIL | command::RELEASE => round_trip::<command::ReservationRef>(ty, data),
        command::SET_FROM_EXTERNAL => round_trip::<command::SetFromExternal>(ty, data),
        event::STOCK_CHANGED
        | event::RESERVATION_HELD
        | event::RESERVATION_COMMITTED
        | event::RESERVATION_FULFILLED
        | event::RESERVATION_RELEASED
        | event::RESERVATION_EXPIRED => round_trip::<event::MovementData>(ty, data),
        event::STOCK_LOW | event::STOCK_DEPLETED | event::STOCK_REPLENISHED => {
            round_trip::<event::StockThresholdData>(ty, data)
        }
        event::RESERVATION_REFUSED => round_trip::<event::RefusedData>(ty, data),
        event::RECONCILIATION_COMPLETED => round_trip::<event::ReconciliationData>(ty, data),
        other => panic!("{other} has no Rust type in through_its_rust_type"),
    }
}

const MOVEMENT_EVENTS: &[&str] = &[
    event::STOCK_CHANGED,
    event::RESERVATION_HELD,
    event::RESERVATION_COMMITTED,
    event::RESERVATION_FULFILLED,
    event::RESERVATION_RELEASED,
    event::RESERVATION_EXPIRED,
];
const THRESHOLD_EVENTS: &[&str] = &[event::STOCK_LOW, event::STOCK_DEPLETED, event::STOCK_REPLENISHED];

/// Replaces what is at `pointer`; it must be there, so that a mistyped pointer cannot pass as a refusal.
fn set(instance: &mut Value, pointer: &str, value: Value) {
    *instance.pointer_mut(pointer).unwrap_or_else(|| panic!("the example has no {pointer}")) = value;
}

/// Adds a field that must not be there yet.
fn insert(instance: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let object = instance.pointer_mut(parent).and_then(Value::as_object_mut);
    let previous =
        object.unwrap_or_else(|| panic!("the example has no object at {parent:?}")).insert(key.to_owned(), value);
    assert!(previous.is_none(), "the example already has {pointer}");
}

fn remove(instance: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let removed = instance.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|object| object.remove(key));
    assert!(removed.is_some(), "the example has no {pointer}");
}

/// The example of `ty`, changed by `edit`, must be refused by the schema of `ty`.
fn assert_refused(ty: &str, what: &str, edit: impl FnOnce(&mut Value)) {
    let mut instance = example_of(ty);
    edit(&mut instance);
    assert!(!validator_of(ty).is_valid(&instance), "{ty}: {what} was accepted:\n{instance:#}");
}

#[test]
fn every_type_has_exactly_one_schema_and_one_example() {
    let types: BTreeSet<String> = every_type().map(str::to_owned).collect();
    assert_eq!(types.len(), command::ALL.len() + event::ALL.len(), "a type is listed twice");
    for part in ["schemas", "examples"] {
        let files = file_stems(part);
        let missing: Vec<_> = types.difference(&files).collect();
        let extra: Vec<_> = files.difference(&types).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{part}/: missing {missing:?}, not in the catalogue {extra:?}");
    }
}

#[test]
fn every_schema_is_self_contained_draft_2020_12_and_fixes_its_type() {
    fn local_refs_only(node: &Value, ty: &str) {
        match node {
            Value::Object(object) => {
                if let Some(target) = object.get("$ref") {
                    let target = target.as_str().unwrap_or_default();
                    assert!(target.starts_with("#/$defs/"), "{ty}: $ref {target} leaves the file");
                }
                object.values().for_each(|child| local_refs_only(child, ty));
            }
            Value::Array(items) => items.iter().for_each(|child| local_refs_only(child, ty)),
            _ => {}
        }
    }
    for ty in every_type() {
        let schema = schema_of(ty);
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{ty}");
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{ty}: not a valid JSON Schema: {e}");
        }
        assert_eq!(schema["properties"]["type"]["const"], ty, "{ty}: the schema fixes another type");
        assert_eq!(schema["properties"]["specversion"]["const"], "1.0", "{ty}");
        local_refs_only(&schema, ty);
    }
}

#[test]
fn every_example_is_valid_against_its_schema() {
    for ty in every_type() {
        assert_valid(ty, &example_of(ty));
    }
}

#[test]
fn the_data_of_every_example_round_trips_through_its_rust_type() {
    for ty in every_type() {
        let data = example_of(ty)["data"].clone();
        assert_eq!(through_its_rust_type(ty, &data), data, "{ty}: data changed on its way through Rust");
    }
}

/// What a schema cannot say (one field equal to another, or to a sum), the examples must still get right.
#[test]
fn the_examples_keep_the_rules_a_schema_cannot_state() {
    for &ty in MOVEMENT_EVENTS {
        let e = example_of(ty);
        let (movement, levels) = (&e["data"]["movement"], &e["data"]["levels"]);
        assert_eq!(e["id"], movement["id"], "{ty}: the event id is the movement id");
        assert_eq!(e["subject"], movement["sku"], "{ty}: the subject is the sku");
        let figure = |name: &str| levels[name].as_i64().expect("a whole figure");
        let available = figure("on_hand") - figure("reserved") - figure("committed") - figure("safety_stock");
        assert_eq!(figure("available"), available, "{ty}: available is on_hand - reserved - committed - safety_stock");
    }
    for &ty in THRESHOLD_EVENTS {
        let e = example_of(ty);
        assert_eq!(e["subject"], e["data"]["sku"], "{ty}: the subject is the sku");
        let (available, velocity) = (e["data"]["available"].as_f64(), e["data"]["velocity_per_day"].as_f64());
        let cover = available.zip(velocity).map(|(a, v)| a / v);
        assert_eq!(e["data"]["days_of_cover"].as_f64(), cover, "{ty}: days_of_cover is available / velocity");
    }
    let refused = example_of(event::RESERVATION_REFUSED);
    assert_eq!(
        refused["subject"], refused["data"]["reservation_id"],
        "the subject of a refused sale is its reservation"
    );
    for difference in example_of(event::RECONCILIATION_COMPLETED)["data"]["differences"].as_array().expect("a list") {
        let figure = |name: &str| difference[name].as_i64().expect("a whole figure");
        assert_eq!(figure("delta"), figure("counted") - figure("expected"), "delta is counted - expected");
    }
}

// What the store really writes is checked against these schemas in `shared/store/src/event.rs`, and every
// event the assembled suite emits in `tests/tests/api/outbox.rs`; this file checks the catalogue itself.

#[test]
fn nothing_without_an_id_or_with_another_specversion_type_or_unknown_data_field_is_accepted() {
    let types: Vec<&str> = every_type().collect();
    for (i, &ty) in types.iter().enumerate() {
        assert_refused(ty, "a missing id", |e| remove(e, "/id"));
        assert_refused(ty, "an empty id", |e| set(e, "/id", json!("")));
        assert_refused(ty, "a missing data", |e| remove(e, "/data"));
        assert_refused(ty, "specversion 0.3", |e| set(e, "/specversion", json!("0.3")));
        let other = types[(i + 1) % types.len()];
        assert_refused(ty, "another type", |e| set(e, "/type", json!(other)));
        assert_refused(ty, "an unknown field in data", |e| insert(e, "/data/note", json!("hello")));
        assert_refused(ty, "an attribute name CloudEvents forbids", |e| insert(e, "/data_base64", json!("e30=")));
    }
}

#[test]
fn events_from_outside_stockroom_or_at_a_time_that_is_not_utc_rfc_3339_are_refused() {
    for &ty in event::ALL {
        assert_refused(ty, "a source outside //stockroom/", |e| set(e, "/source", json!("//shopify/webhooks")));
        assert_refused(ty, "a missing time", |e| remove(e, "/time"));
        assert_refused(ty, "a time with a space", |e| set(e, "/time", json!("2025-04-02 14:31:07Z")));
        assert_refused(ty, "a time not in UTC", |e| set(e, "/time", json!("2025-04-02T15:31:07+01:00")));
        assert_refused(ty, "a content type other than JSON", |e| set(e, "/datacontenttype", json!("text/plain")));
    }
}

#[test]
fn commands_with_a_bad_sku_location_or_reservation_id_are_refused() {
    let long_sku = json!("S".repeat(129));
    let cases: &[(&str, &str)] = &[
        (command::ADJUST, "/data/changes/0/sku"),
        (command::HOLD, "/data/lines/0/sku"),
        (command::SELL, "/data/lines/0/sku"),
        (command::COMMIT, "/data/lines/0/sku"),
        (command::SET_FROM_EXTERNAL, "/data/sku"),
    ];
    for &(ty, pointer) in cases {
        assert_refused(ty, "a sku with a space", |e| set(e, pointer, json!("TEE BLK")));
        assert_refused(ty, "an empty sku", |e| set(e, pointer, json!("")));
        assert_refused(ty, "a sku of 129 characters", |e| set(e, pointer, long_sku.clone()));
    }
    assert_refused(command::ADJUST, "a location of 65 characters", |e| {
        set(e, "/data/changes/0/location", json!("l".repeat(65)))
    });
    assert_refused(command::HOLD, "a location with a star", |e| set(e, "/data/lines/1/location", json!("store*")));
    for ty in [command::HOLD, command::SELL, command::COMMIT, command::FULFIL, command::RELEASE] {
        assert_refused(ty, "a reservation id with a slash", |e| set(e, "/data/reservation_id", json!("cart/7f3a91")));
        assert_refused(ty, "a missing reservation id", |e| remove(e, "/data/reservation_id"));
    }
}

#[test]
fn commands_with_a_zero_negative_or_fractional_quantity_are_refused() {
    let cases: &[(&str, &str)] = &[
        (command::HOLD, "/data/lines/0/quantity"),
        (command::SELL, "/data/lines/0/quantity"),
        (command::COMMIT, "/data/lines/0/quantity"),
    ];
    for &(ty, pointer) in cases {
        assert_refused(ty, "quantity 0", |e| set(e, pointer, json!(0)));
        assert_refused(ty, "quantity -1", |e| set(e, pointer, json!(-1)));
        assert_refused(ty, "quantity 1.5", |e| set(e, pointer, json!(1.5)));
        assert_refused(ty, "more than a trillion", |e| set(e, pointer, json!(1_000_000_000_001_i64)));
    }
    assert_refused(command::ADJUST, "delta 0", |e| set(e, "/data/changes/0/delta", json!(0)));
    assert_refused(command::ADJUST, "a negative set", |e| set(e, "/data/changes/1/set", json!(-3)));
    assert_refused(command::ADJUST, "a negative expected_on_hand", |e| {
        set(e, "/data/changes/1/expected_on_hand", json!(-1))
    });
    assert_refused(command::SET_FROM_EXTERNAL, "on_hand -1", |e| set(e, "/data/on_hand", json!(-1)));
    assert_refused(command::ADJUST, "no changes", |e| set(e, "/data/changes", json!([])));
    assert_refused(command::HOLD, "no lines", |e| set(e, "/data/lines", json!([])));
}

#[test]
fn a_change_needs_exactly_one_of_delta_and_set() {
    assert_refused(command::ADJUST, "both delta and set", |e| insert(e, "/data/changes/0/set", json!(30)));
    assert_refused(command::ADJUST, "neither delta nor set", |e| remove(e, "/data/changes/0/delta"));
    assert_refused(command::ADJUST, "a blank reason", |e| set(e, "/data/changes/0/reason", json!("  ")));
}

#[test]
fn a_hold_lasts_between_1_and_86400_seconds() {
    for ttl_seconds in [json!(0), json!(86_401), json!(90.5)] {
        assert_refused(command::HOLD, "a ttl out of range", |e| set(e, "/data/ttl_seconds", ttl_seconds));
    }
    let mut longest = example_of(command::HOLD);
    set(&mut longest, "/data/ttl_seconds", json!(86_400));
    assert_valid(command::HOLD, &longest);
}

#[test]
fn an_external_count_needs_an_rfc_3339_time_and_a_named_system() {
    let ty = command::SET_FROM_EXTERNAL;
    assert_refused(ty, "a time without a zone", |e| set(e, "/data/observed_at", json!("2025-04-02T09:14:22")));
    assert_refused(ty, "no system", |e| remove(e, "/data/system"));
    assert_refused(ty, "a system with capitals", |e| set(e, "/data/system", json!("Shopify")));
    assert_refused(ty, "a null reference (leave it out instead)", |e| set(e, "/data/reference", json!(null)));
}

#[test]
fn movement_events_with_a_bad_sku_another_kind_or_deltas_of_another_kind_are_refused() {
    for &ty in MOVEMENT_EVENTS {
        assert_refused(ty, "a movement sku with a space", |e| set(e, "/data/movement/sku", json!("TEE BLK")));
        assert_refused(ty, "a subject that is not a sku", |e| set(e, "/subject", json!("TEE BLK")));
        assert_refused(ty, "a missing subject", |e| remove(e, "/subject"));
        assert_refused(ty, "a movement kind of another type", |e| set(e, "/data/movement/kind", json!("sale")));
        assert_refused(ty, "no deltas at all", |e| {
            set(e, "/data/movement/deltas", json!({"on_hand": 0, "reserved": 0, "committed": 0}))
        });
        assert_refused(ty, "a negative on_hand", |e| set(e, "/data/levels/on_hand", json!(-1)));
        assert_refused(ty, "a left-out reference", |e| remove(e, "/data/movement/reference"));
    }
    assert_refused(event::STOCK_CHANGED, "an adjustment that reserves", |e| {
        set(e, "/data/movement/deltas/reserved", json!(1))
    });
    assert_refused(event::RESERVATION_HELD, "a hold that gives back", |e| {
        set(e, "/data/movement/deltas/reserved", json!(-2))
    });
    assert_refused(event::RESERVATION_RELEASED, "a release of reserved and committed at once", |e| {
        set(e, "/data/movement/deltas/reserved", json!(-1))
    });
}

#[test]
fn threshold_events_whose_figures_contradict_their_type_are_refused() {
    assert_refused(event::STOCK_LOW, "status ok", |e| set(e, "/data/status", json!("ok")));
    assert_refused(event::STOCK_LOW, "low from low", |e| set(e, "/data/previous_status", json!("low")));
    assert_refused(event::STOCK_DEPLETED, "depleted with stock left", |e| set(e, "/data/available", json!(5)));
    assert_refused(event::STOCK_REPLENISHED, "replenished to nothing", |e| set(e, "/data/available", json!(0)));
    for &ty in THRESHOLD_EVENTS {
        assert_refused(ty, "days of cover with nothing sold", |e| set(e, "/data/velocity_per_day", json!(0.0)));
        assert_refused(ty, "no days of cover although it sells", |e| set(e, "/data/days_of_cover", json!(null)));
        assert_refused(ty, "a bad sku", |e| set(e, "/data/sku", json!("MUG ENAMEL")));
        assert_refused(ty, "a missing location (null means the total)", |e| remove(e, "/data/location"));
    }
    let mut unsold = example_of(event::STOCK_LOW);
    set(&mut unsold, "/data/velocity_per_day", json!(0.0));
    set(&mut unsold, "/data/days_of_cover", json!(null));
    set(&mut unsold, "/data/projected_stockout_at", json!(null));
    set(&mut unsold, "/data/reorder_point", json!(10));
    assert_valid(event::STOCK_LOW, &unsold);
}

#[test]
fn a_refusal_names_a_known_command_and_carries_an_error_code() {
    let ty = event::RESERVATION_REFUSED;
    assert_refused(ty, "no error code", |e| remove(e, "/data/error/error"));
    assert_refused(ty, "an error code that is not snake_case", |e| set(e, "/data/error/error", json!("Out Of Stock")));
    assert_refused(ty, "an unknown command type", |e| {
        set(e, "/data/command_type", json!("dev.stockroom.command.x.v1"))
    });
    assert_refused(ty, "an empty command id", |e| set(e, "/data/command_id", json!("")));
}

#[test]
fn a_reconciliation_lists_only_real_differences_booked_exactly_when_applied() {
    let ty = event::RECONCILIATION_COMPLETED;
    assert_refused(ty, "a zero difference", |e| set(e, "/data/differences/0/delta", json!(0)));
    assert_refused(ty, "an applied difference without its movement", |e| {
        set(e, "/data/differences/0/movement_id", json!(null))
    });
    assert_refused(ty, "a report-only run that booked movements", |e| set(e, "/data/applied", json!(false)));
    assert_refused(ty, "a negative count", |e| set(e, "/data/differences/1/counted", json!(-1)));
    assert_refused(ty, "a bad location", |e| set(e, "/data/differences/1/location", json!("wh dublin")));
    let mut report_only = example_of(ty);
    set(&mut report_only, "/data/applied", json!(false));
    for i in 0..2 {
        set(&mut report_only, &format!("/data/differences/{i}/movement_id"), json!(null));
    }
    assert_valid(ty, &report_only);
}
