//! Spanner's REST API, the calls the store makes: sessions, SQL and batch DML inside transactions, commit and
//! rollback, and (against an emulator) creating the instance and database; schema changes as long-running
//! operations. Errors are put into the store's terms here: `ABORTED` is a lost conflict (run the transaction
//! again), `ALREADY_EXISTS` a duplicate key, the rest transient or not.
//!
//! REST over reqwest, not the official gRPC crate: reqwest is in the build already (the OIDC key fetch, the
//! Pub/Sub and BigQuery adapters), so this adapter costs its own ~1,100 lines only, while a gRPC Spanner client
//! brings tonic, prost and the generated Google APIs: `../shared/STACK.md` measured 2.5–3.5 minutes of cold
//! debug build and 0.7–1 GB of `target/` per Google SDK crate on these 2-core machines, which the default build
//! (Spanner included) and every CI run would pay.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use stockroom_google::{Api, Refusal};

use crate::error::StoreError;
use crate::sql::{Param, Query};

/// How long a schema operation may take before the store gives up on it.
const DDL_WAIT_MAX: Duration = Duration::from_secs(300);
const DDL_POLL: Duration = Duration::from_millis(200);

/// gRPC status codes, as Spanner's REST errors carry them (a number from the emulator's gateway, a name from
/// Google's front end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    Internal,
    Unavailable,
    Other,
}

impl Code {
    fn of_number(n: i64) -> Self {
        match n {
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            6 => Self::AlreadyExists,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            10 => Self::Aborted,
            13 => Self::Internal,
            14 => Self::Unavailable,
            _ => Self::Other,
        }
    }

    fn of_name(name: &str) -> Self {
        match name {
            "DEADLINE_EXCEEDED" => Self::DeadlineExceeded,
            "NOT_FOUND" => Self::NotFound,
            "ALREADY_EXISTS" => Self::AlreadyExists,
            "RESOURCE_EXHAUSTED" => Self::ResourceExhausted,
            "FAILED_PRECONDITION" => Self::FailedPrecondition,
            "ABORTED" => Self::Aborted,
            "INTERNAL" => Self::Internal,
            "UNAVAILABLE" => Self::Unavailable,
            _ => Self::Other,
        }
    }

    /// `{"code": 10, "message": …}` (the emulator) or `{"error": {"code": 409, "status": "ABORTED", …}}`.
    fn of_error(body: &Value) -> (Self, String) {
        let message = body["message"].as_str().or(body["error"]["message"].as_str()).unwrap_or_default().to_owned();
        let code = match (body["error"]["status"].as_str(), body["code"].as_i64()) {
            (Some(name), _) => Self::of_name(name),
            (None, Some(n)) => Self::of_number(n),
            _ => Self::Other,
        };
        (code, message)
    }
}

/// A Spanner failure in the store's terms.
fn store_error(code: Code, message: &str, reason: String) -> StoreError {
    match code {
        Code::Aborted => StoreError::Conflict(reason.into()),
        // The emulator runs one read-write transaction or schema change at a time, and says so this way when a
        // schema change meets a transaction: as for a lost conflict, the change is tried again.
        Code::FailedPrecondition if message.contains("concurrent schema change") => StoreError::Conflict(reason.into()),
        Code::AlreadyExists => StoreError::Duplicate(reason.into()),
        Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unavailable => StoreError::Transient(reason.into()),
        // A session Spanner dropped (idle for an hour, or the emulator restarted): a new one will do.
        Code::NotFound if message.contains("Session") => StoreError::Transient(reason.into()),
        _ => StoreError::Internal(reason.into()),
    }
}

fn refused(r: Refusal) -> StoreError {
    match r {
        Refusal::Transient(reason) => StoreError::transient(format!("spanner: {reason}")),
        Refusal::Fatal(reason) => StoreError::Config(format!("spanner: {reason}")),
        Refusal::Status { status, reason, body, .. } => {
            let (code, message) = Code::of_error(&serde_json::from_str(&body).unwrap_or_default());
            let reason = format!("spanner: {reason}");
            if code == Code::Other && status.is_server_error() {
                StoreError::Transient(reason.into())
            } else {
                store_error(code, &message, reason)
            }
        }
    }
}

/// The rows a statement read, what it changed, and the transaction an inline `begin` started.
#[derive(Debug, Default)]
pub(crate) struct ResultSet {
    pub rows: Vec<Vec<Value>>,
    pub changed: u64,
    pub transaction: Option<String>,
}

impl ResultSet {
    fn of(v: &Value) -> Self {
        let rows = v["rows"]
            .as_array()
            .map(|rows| rows.iter().map(|r| r.as_array().cloned().unwrap_or_default()).collect())
            .unwrap_or_default();
        let changed = v["stats"]["rowCountExact"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
        let transaction = v["metadata"]["transaction"]["id"].as_str().map(str::to_owned);
        Self { rows, changed, transaction }
    }
}

/// One database's REST API.
pub(crate) struct Client {
    api: Api,
    /// `projects/P/instances/I/databases/D`.
    database: String,
}

fn params(q: &Query) -> (Value, Value) {
    let mut values = serde_json::Map::new();
    let mut types = serde_json::Map::new();
    for (i, p) in q.params.iter().enumerate() {
        let name = format!("p{}", i + 1);
        let (value, ty) = match p {
            // INT64 travels as a decimal string in Spanner's JSON.
            Param::Int(v) => (v.map_or(Value::Null, |v| Value::String(v.to_string())), "INT64"),
            Param::Text(v) => (v.clone().map_or(Value::Null, Value::String), "STRING"),
        };
        values.insert(name.clone(), value);
        types.insert(name, json!({ "code": ty }));
    }
    (Value::Object(values), Value::Object(types))
}

fn statement(q: &Query) -> Value {
    let (params, types) = params(q);
    json!({ "sql": q.sql, "params": params, "paramTypes": types })
}

impl Client {
    pub(crate) fn new(api: Api, database: String) -> Self {
        Self { api, database }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.api.endpoint())
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, StoreError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let started = std::time::Instant::now();
        let response = self.api.send(method.clone(), &self.url(path), bytes).await.map_err(refused)?;
        tracing::debug!(%method, path, ms = started.elapsed().as_secs_f64() * 1e3, "spanner call");
        let text = response.text().await.map_err(|e| StoreError::transient(format!("spanner: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| StoreError::internal(format!("spanner: an answer that is not JSON: {e}")))
    }

    pub(crate) async fn create_sessions(&self, count: usize) -> Result<Vec<String>, StoreError> {
        let answer = self
            .call(
                Method::POST,
                &format!("{}/sessions:batchCreate", self.database),
                Some(json!({ "sessionCount": count })),
            )
            .await?;
        Ok(answer["session"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// A statement, in the transaction `selector` names (`{"id"}`, or `{"begin"}` to start one with it).
    pub(crate) async fn execute_sql(
        &self,
        session: &str,
        selector: Value,
        seqno: i64,
        q: &Query,
    ) -> Result<ResultSet, StoreError> {
        let mut body = statement(q);
        body["transaction"] = selector;
        body["seqno"] = json!(seqno.to_string());
        Ok(ResultSet::of(&self.call(Method::POST, &format!("{session}:executeSql"), Some(body)).await?))
    }

    /// DML statements in one round trip: the rows each changed, and the transaction an inline `begin` started
    /// (also when a later statement failed, so that it can be rolled back).
    pub(crate) async fn execute_batch_dml(
        &self,
        session: &str,
        selector: Value,
        seqno: i64,
        qs: &[Query],
    ) -> (Option<String>, Result<Vec<u64>, StoreError>) {
        let body = json!({
            "transaction": selector,
            "seqno": seqno.to_string(),
            "statements": qs.iter().map(statement).collect::<Vec<_>>(),
        });
        let answer = match self.call(Method::POST, &format!("{session}:executeBatchDml"), Some(body)).await {
            Ok(answer) => answer,
            Err(e) => return (None, Err(e)),
        };
        let sets: Vec<ResultSet> =
            answer["resultSets"].as_array().map(|s| s.iter().map(ResultSet::of).collect()).unwrap_or_default();
        let transaction = sets.first().and_then(|s| s.transaction.clone());
        let status = &answer["status"];
        match status["code"].as_i64() {
            Some(code) if code != 0 => {
                let message = status["message"].as_str().unwrap_or_default();
                let reason = format!("spanner: statement {} of {}: {message}", sets.len() + 1, qs.len());
                (transaction, Err(store_error(Code::of_number(code), message, reason)))
            }
            _ => (transaction, Ok(sets.iter().map(|s| s.changed).collect())),
        }
    }

    /// Returns once Spanner has committed: a write never reports success before this.
    pub(crate) async fn commit(&self, session: &str, transaction: &str) -> Result<(), StoreError> {
        self.call(Method::POST, &format!("{session}:commit"), Some(json!({ "transactionId": transaction })))
            .await
            .map(|_| ())
    }

    pub(crate) async fn rollback(&self, session: &str, transaction: &str) -> Result<(), StoreError> {
        self.call(Method::POST, &format!("{session}:rollback"), Some(json!({ "transactionId": transaction })))
            .await
            .map(|_| ())
    }

    /// Applies schema statements and waits for the operation to finish.
    pub(crate) async fn update_ddl(&self, statements: &[String]) -> Result<(), StoreError> {
        let op = self
            .call(Method::PATCH, &format!("{}/ddl", self.database), Some(json!({ "statements": statements })))
            .await?;
        self.wait(op).await
    }

    /// Polls a long-running operation until it is done; its error, if it failed.
    async fn wait(&self, mut op: Value) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        loop {
            if op["done"].as_bool() == Some(true) {
                return match op.get("error") {
                    None | Some(Value::Null) => Ok(()),
                    Some(e) => {
                        let (code, message) = Code::of_error(e);
                        let code =
                            if code == Code::Other { Code::of_number(e["code"].as_i64().unwrap_or(2)) } else { code };
                        Err(store_error(code, &message, format!("spanner: schema change: {message}")))
                    }
                };
            }
            let Some(name) = op["name"].as_str().map(str::to_owned) else {
                return Err(StoreError::internal("spanner: an operation without a name"));
            };
            if started.elapsed() > DDL_WAIT_MAX {
                return Err(StoreError::transient(format!("spanner: {name} is still running")));
            }
            tokio::time::sleep(DDL_POLL).await;
            op = self.call(Method::GET, &name, None).await?;
        }
    }

    /// The emulator only: makes the instance and the PostgreSQL-dialect database if they are missing.
    pub(crate) async fn create_on_emulator(&self) -> Result<(), StoreError> {
        let parts: Vec<&str> = self.database.split('/').collect();
        let (project, instance, database) = (parts[1], parts[3], parts[5]);
        let created = self
            .call(
                Method::POST,
                &format!("projects/{project}/instances"),
                Some(json!({
                    "instanceId": instance,
                    "instance": {
                        "config": format!("projects/{project}/instanceConfigs/emulator-config"),
                        "displayName": instance,
                        "nodeCount": 1,
                    },
                })),
            )
            .await;
        match created {
            Ok(op) => self.wait(op).await?,
            Err(StoreError::Duplicate(_)) => {}
            Err(e) => return Err(e),
        }
        let created = self
            .call(
                Method::POST,
                &format!("projects/{project}/instances/{instance}/databases"),
                Some(json!({ "createStatement": format!("CREATE DATABASE \"{database}\""), "databaseDialect": "POSTGRESQL" })),
            )
            .await;
        match created {
            Ok(op) => self.wait(op).await,
            Err(StoreError::Duplicate(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drops the database (tests clean up after themselves).
    pub(crate) async fn drop_database(&self) -> Result<(), StoreError> {
        self.call(Method::DELETE, &self.database, None).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_are_read() {
        let emulator = json!({ "code": 10, "message": "Transaction 2 aborted" });
        assert_eq!(Code::of_error(&emulator), (Code::Aborted, "Transaction 2 aborted".to_owned()));
        let google = json!({ "error": { "code": 409, "message": "Row exists", "status": "ALREADY_EXISTS" } });
        assert_eq!(Code::of_error(&google), (Code::AlreadyExists, "Row exists".to_owned()));
    }

    #[test]
    fn aborts_are_conflicts_and_duplicates_are_duplicates() {
        assert!(matches!(store_error(Code::Aborted, "", String::new()), StoreError::Conflict(_)));
        assert!(matches!(store_error(Code::AlreadyExists, "", String::new()), StoreError::Duplicate(_)));
        let schema = "Schema change operation rejected because a concurrent schema change operation or read-write transaction is already in progress.";
        assert!(matches!(store_error(Code::FailedPrecondition, schema, String::new()), StoreError::Conflict(_)));
        assert!(matches!(store_error(Code::Unavailable, "", String::new()), StoreError::Transient(_)));
        assert!(matches!(store_error(Code::Other, "", String::new()), StoreError::Internal(_)));
    }

    #[test]
    fn integers_travel_as_strings_and_nulls_keep_their_type() {
        let q = crate::sql::query("SELECT $1, $2, $3").bind(7_i64).bind("x").bind(None::<i64>);
        let (values, types) = params(&q);
        assert_eq!(values, json!({ "p1": "7", "p2": "x", "p3": null }));
        assert_eq!(types["p3"], json!({ "code": "INT64" }));
    }
}
