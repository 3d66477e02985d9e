//! Rows both ways: events and policies as insertAll rows, query parameters out, result rows decoded by column
//! name.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};
use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{is_order, units_sold};
use stockroom_store::{ObservedEvent, StoreError};

use super::client::Failure;

/// A named query parameter (`@name` in the SQL).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryParam {
    String(&'static str, String),
    Int64(&'static str, i64),
    Timestamp(&'static str, Timestamp),
}

impl QueryParam {
    pub(super) fn to_json(&self) -> Value {
        let (name, ty, value) = match self {
            Self::String(name, v) => (name, "STRING", v.clone()),
            Self::Int64(name, v) => (name, "INT64", v.to_string()),
            // The format Google's own clients send.
            Self::Timestamp(name, v) => (name, "TIMESTAMP", v.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()),
        };
        json!({"name": name, "parameterType": {"type": ty}, "parameterValue": {"value": value}})
    }
}

/// One result row: each column's value as BigQuery's JSON has it (a string or null for scalars), by name.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRow(HashMap<String, Value>);

impl QueryRow {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column).filter(|v| !v.is_null())
    }

    pub fn string(&self, column: &str) -> Result<Option<String>, StoreError> {
        match self.get(column) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(corrupt(column, other)),
        }
    }

    /// An INT64 column (a decimal string in BigQuery's JSON).
    pub fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        match self.get(column) {
            None => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| corrupt(column, &Value::String(s.clone()))),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| corrupt(column, &Value::Number(n.clone()))),
            Some(other) => Err(corrupt(column, other)),
        }
    }

    /// A FLOAT64 column (a decimal string, or `Infinity`/`NaN` and the like).
    pub fn float(&self, column: &str) -> Result<Option<f64>, StoreError> {
        match self.get(column) {
            None => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| corrupt(column, &Value::String(s.clone()))),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| corrupt(column, &Value::Number(n.clone()))),
            Some(other) => Err(corrupt(column, other)),
        }
    }

    pub(super) fn required<T>(&self, column: &str, value: Result<Option<T>, StoreError>) -> Result<T, StoreError> {
        value?.ok_or_else(|| StoreError::Corrupt(format!("bigquery: column {column} is null")))
    }
}

fn corrupt(column: &str, value: &Value) -> StoreError {
    StoreError::Corrupt(format!("bigquery: column {column}: unexpected value {value}"))
}

/// One insertAll row and about what it adds to a request.
pub(super) struct Row {
    pub(super) value: Value,
    pub(super) bytes: usize,
}

impl Row {
    pub(super) fn new(insert_id: String, json: Value) -> Self {
        let value = json!({"insertId": insert_id, "json": json});
        let bytes = value.to_string().len() + 1;
        Self { value, bytes }
    }
}

/// An event as an `inventory_events` row: the movement's columns when it carries one, the whole event as JSON,
/// and `units_sold` / `is_order` from the domain's rules (the views only add them up).
pub(super) fn event_row(e: &ObservedEvent, now: Timestamp) -> Row {
    let m = e.movement.as_ref();
    let occurred_at = match m {
        Some(m) => m.at,
        None => e.body["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map_or(now, |t| t.to_utc()),
    };
    let sku = m.map(|m| m.sku.clone()).or_else(|| e.body["subject"].as_str().map(str::to_owned));
    let json = json!({
        "id": e.id,
        "type": e.ty,
        "occurred_at": rfc3339(occurred_at),
        "movement_id": m.map(|m| &m.id),
        "sku": sku,
        "location": m.map(|m| &m.location),
        "kind": m.map(|m| &m.kind),
        "on_hand_delta": m.map(|m| m.on_hand_delta),
        "reserved_delta": m.map(|m| m.reserved_delta),
        "committed_delta": m.map(|m| m.committed_delta),
        "cause": m.and_then(|m| m.cause.as_ref()),
        "on_hand": m.map(|m| m.on_hand),
        "reserved": m.map(|m| m.reserved),
        "committed": m.map(|m| m.committed),
        "safety_stock": m.map(|m| m.safety_stock),
        "available": m.map(|m| m.available),
        "units_sold": m.map_or(0, |m| units_sold(&m.kind, m.committed_delta)),
        "is_order": m.is_some_and(|m| is_order(&m.kind)),
        // A JSON column takes the JSON text.
        "event": e.body.to_string(),
        "inserted_at": rfc3339(now),
    });
    Row::new(e.id.clone(), json)
}

pub(super) fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn column_names(page: &Value) -> Vec<String> {
    page["schema"]["fields"]
        .as_array()
        .map(|fields| fields.iter().map(|f| f["name"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

/// `{"f": [{"v": ...}, ...]}` under the schema's names.
pub(super) fn decode_row(names: &[String], row: &Value) -> Result<QueryRow, Failure> {
    let cells = row["f"].as_array().ok_or_else(|| Failure::Rejected(format!("query: not a row: {row}")))?;
    if cells.len() != names.len() {
        return Err(Failure::Rejected(format!("query: {} cells for {} columns", cells.len(), names.len())));
    }
    Ok(QueryRow(names.iter().cloned().zip(cells.iter().map(|c| c["v"].clone())).collect()))
}

#[cfg(test)]
mod tests {
    use stockroom_store::ObservedMovement;

    use super::*;

    #[test]
    fn a_movement_event_becomes_a_row_with_its_sale_figures() {
        let at: Timestamp = "2026-01-10T12:00:00.123456Z".parse().unwrap();
        let now: Timestamp = "2026-01-10T12:00:05Z".parse().unwrap();
        let movement = ObservedMovement {
            id: "m1".into(),
            at,
            sku: "A".into(),
            location: "wh-1".into(),
            kind: "release".into(),
            on_hand_delta: 0,
            reserved_delta: 0,
            committed_delta: -2,
            cause: Some("reservation:r1".into()),
            on_hand: 10,
            reserved: 0,
            committed: 1,
            safety_stock: 1,
            available: 8,
        };
        let e = ObservedEvent {
            id: "m1".into(),
            ty: "dev.stockroom.reservation.released.v1".into(),
            body: json!({"id": "m1", "data": {"x": "ü"}}),
            movement: Some(movement),
        };
        let row = event_row(&e, now);
        assert_eq!(row.value["insertId"], "m1");
        let j = &row.value["json"];
        assert_eq!(j["occurred_at"], "2026-01-10T12:00:00.123456Z");
        assert_eq!(j["inserted_at"], "2026-01-10T12:00:05.000000Z");
        assert_eq!((j["units_sold"].as_i64(), j["is_order"].as_bool()), (Some(-2), Some(false)));
        assert_eq!(serde_json::from_str::<Value>(j["event"].as_str().unwrap()).unwrap(), e.body);
        assert_eq!(row.bytes, row.value.to_string().len() + 1);

        // Not a movement: its time and subject, the movement columns null, no sale.
        let e = ObservedEvent {
            id: "t1".into(),
            ty: "dev.stockroom.stock.low.v1".into(),
            body: json!({"time": "2026-01-09T01:02:03Z", "subject": "B"}),
            movement: None,
        };
        let j = event_row(&e, now).value["json"].clone();
        assert_eq!((j["occurred_at"].as_str(), j["sku"].as_str()), (Some("2026-01-09T01:02:03.000000Z"), Some("B")));
        assert!(j["movement_id"].is_null() && j["kind"].is_null());
        assert_eq!((j["units_sold"].as_i64(), j["is_order"].as_bool()), (Some(0), Some(false)));
    }
    #[test]
    fn rows_decode_by_column_name() {
        let names = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let row = decode_row(&names, &json!({"f": [{"v": "42"}, {"v": null}, {"v": "4.5"}]})).unwrap();
        assert_eq!(row.int("a").unwrap(), Some(42));
        assert_eq!(row.int("b").unwrap(), None);
        assert_eq!(row.float("c").unwrap(), Some(4.5));
        assert!(matches!(row.int("c"), Err(StoreError::Corrupt(_))));
        assert!(decode_row(&names, &json!({"f": [{"v": "1"}]})).is_err());
    }

    #[test]
    fn timestamp_parameters_use_the_clients_format() {
        let t: Timestamp = "2026-01-10T10:00:00.5Z".parse().unwrap();
        let p = QueryParam::Timestamp("first", t).to_json();
        assert_eq!(p["parameterValue"]["value"], "2026-01-10 10:00:00.500000+00:00");
        assert_eq!(p["parameterType"]["type"], "TIMESTAMP");
    }
}
