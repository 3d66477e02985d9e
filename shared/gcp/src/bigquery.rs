//! The cloud's analytics in BigQuery over its REST API (v2): events streamed in with `tabledata.insertAll`, the
//! figures read back from the views in `analytics/bigquery/` with `jobs.query`.
//!
//! Why REST over `reqwest` and not a BigQuery crate: `google-cloud-bigquery` has no insertAll and costs minutes of
//! cold compile; `gcp-bigquery-client` pulls a second rustls backend (see STACK.md). Four calls are made here.
//!
//! Writing: one `inventory_events` row per event, `insertId` = the event id, at most [`INSERT_ROWS_MAX`] rows and
//! about [`REQUEST_BYTES_MAX`] bytes a request. insertId dedupe is best effort (and absent in the emulator), so the
//! views keep one row per id (`events_deduped`) and a retried batch does no harm. A request is all or nothing
//! (`skipInvalidRows` off); a row BigQuery calls invalid fails the call without a retry, everything else that
//! fails (HTTP 408/429/5xx, rate limits, connection trouble, rows "stopped" or timed out) is retried a bounded
//! number of times with backoff and then is [`StoreError::Transient`].
//!
//! Reading: the views answer as of BigQuery's own clock (`CURRENT_TIMESTAMP()` in the query), not the `now`
//! passed in; for the same events the figures are the embedded store's, to the second. Each view's SQL mirrors
//! `stockroom_domain::analytics`; the emulator test holds both paths to the same answers.
//!
//! Auth: with an emulator (a plain `http://` endpoint) none; otherwise an access token from the metadata server
//! (Cloud Run's service account), cached until shortly before it expires: `google::MetadataToken`, as for
//! Pub/Sub.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{
    Bucket, Health, HealthStatus, SalesPoint, TOP_SELLERS_MAX, TopSeller, Window, fill_series, is_order,
    rank_top_sellers, series_starts, units_sold,
};
use stockroom_store::{AnalyticsReader, AnalyticsSink, ObservedEvent, Policy, StoreError};

use crate::google::{Api, Auth, Refusal, backoff, describe, emulator_endpoint, truncate};

/// BigQuery's global endpoint (paths start with `/bigquery/v2`).
pub const BIGQUERY_ENDPOINT: &str = "https://bigquery.googleapis.com";
/// The dataset the analytics live in unless configured otherwise (`STOCKROOM_BIGQUERY_DATASET`'s default).
pub const ANALYTICS_DATASET: &str = "stockroom";
/// BigQuery recommends at most 500 rows an insertAll request (it allows 50,000).
pub const INSERT_ROWS_MAX: usize = 500;
/// Bytes an insertAll request carries at most (BigQuery's limit is 10 MB); a single larger row goes alone.
pub const REQUEST_BYTES_MAX: usize = 5_000_000;

/// Result pages one query reads at most (each up to BigQuery's 10 MB page).
const RESULT_PAGES_MAX: usize = 100;

/// The schema: the tables, then the views in dependency order. The SQL lives in `analytics/bigquery/` (the files
/// terraform will take over), with `${project}` and `${dataset}` for the names.
const TABLES_SQL: &str = include_str!("../../../analytics/bigquery/tables.sql");
const VIEWS: [(&str, &str); 14] = [
    ("events_deduped", include_str!("../../../analytics/bigquery/views/events_deduped.sql")),
    ("movements", include_str!("../../../analytics/bigquery/views/movements.sql")),
    ("policies", include_str!("../../../analytics/bigquery/views/policies.sql")),
    ("stock_levels", include_str!("../../../analytics/bigquery/views/stock_levels.sql")),
    ("sales", include_str!("../../../analytics/bigquery/views/sales.sql")),
    ("sales_hourly", include_str!("../../../analytics/bigquery/views/sales_hourly.sql")),
    ("sales_daily", include_str!("../../../analytics/bigquery/views/sales_daily.sql")),
    ("stock_figures", include_str!("../../../analytics/bigquery/views/stock_figures.sql")),
    ("stock_health_rows", include_str!("../../../analytics/bigquery/views/stock_health_rows.sql")),
    ("stock_health", include_str!("../../../analytics/bigquery/views/stock_health.sql")),
    ("stock_health_by_location", include_str!("../../../analytics/bigquery/views/stock_health_by_location.sql")),
    ("top_sellers", include_str!("../../../analytics/bigquery/views/top_sellers.sql")),
    ("top_sellers_24h", include_str!("../../../analytics/bigquery/views/top_sellers_24h.sql")),
    ("top_sellers_7d", include_str!("../../../analytics/bigquery/views/top_sellers_7d.sql")),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryConfig {
    /// `https://bigquery.googleapis.com`, or an emulator's `http://127.0.0.1:9050`.
    pub endpoint: String,
    pub project: String,
    pub dataset: String,
    /// Where `apply_schema` creates the dataset (`US`, `EU`, `europe-west1`, ...); `None`: BigQuery's default.
    pub location: Option<String>,
    /// Rows per insertAll request at most (clamped to 1..=[`INSERT_ROWS_MAX`]).
    pub batch_max: usize,
    /// Per HTTP request, token fetches included.
    pub timeout_ms: u64,
    /// Retries of a transient failure, with backoff.
    pub retries_max: u32,
    /// How long a query may run, waiting for its results included.
    pub query_timeout_ms: u64,
}

impl BigQueryConfig {
    /// Google's endpoint, 500 rows a request, 10 s a request, 5 retries, 60 s a query.
    pub fn new(project: impl Into<String>, dataset: impl Into<String>) -> Self {
        Self {
            endpoint: BIGQUERY_ENDPOINT.to_owned(),
            project: project.into(),
            dataset: dataset.into(),
            location: None,
            batch_max: INSERT_ROWS_MAX,
            timeout_ms: 10_000,
            retries_max: 5,
            query_timeout_ms: 60_000,
        }
    }

    /// As [`BigQueryConfig::new`], but on the emulator named by `BIGQUERY_EMULATOR_HOST` (`http://host:port`, or
    /// `host:port`) when it is set.
    pub fn from_env(project: impl Into<String>, dataset: impl Into<String>) -> Self {
        Self { endpoint: emulator_endpoint("BIGQUERY_EMULATOR_HOST", BIGQUERY_ENDPOINT), ..Self::new(project, dataset) }
    }
}

/// A named query parameter (`@name` in the SQL).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryParam {
    String(&'static str, String),
    Int64(&'static str, i64),
    Timestamp(&'static str, Timestamp),
}

impl QueryParam {
    fn to_json(&self) -> Value {
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

    fn required<T>(&self, column: &str, value: Result<Option<T>, StoreError>) -> Result<T, StoreError> {
        value?.ok_or_else(|| StoreError::Corrupt(format!("bigquery: column {column} is null")))
    }
}

fn corrupt(column: &str, value: &Value) -> StoreError {
    StoreError::Corrupt(format!("bigquery: column {column}: unexpected value {value}"))
}

/// Streams events into BigQuery (as [`AnalyticsSink`]) and reads the figures back (as [`AnalyticsReader`]).
pub struct BigQuery {
    config: BigQueryConfig,
    api: Api,
}

impl BigQuery {
    /// No auth when the endpoint is plain `http://` (an emulator: Google serves only HTTPS), else metadata-server
    /// tokens.
    pub fn new(mut config: BigQueryConfig, http: reqwest::Client) -> Self {
        config.batch_max = config.batch_max.clamp(1, INSERT_ROWS_MAX);
        Self { api: Api::new(http, &config.endpoint, config.timeout_ms), config }
    }

    pub fn with_auth(self, auth: Auth) -> Self {
        Self { api: self.api.with_auth(auth), ..self }
    }

    pub fn config(&self) -> &BigQueryConfig {
        &self.config
    }

    /// Creates the dataset, the tables and the views (replacing each view with the SQL of this build). Safe to run
    /// again; tables already there are left as they are.
    pub async fn apply_schema(&self) -> Result<(), StoreError> {
        self.check_names()?;
        let mut dataset = json!({
            "datasetReference": {"projectId": self.config.project, "datasetId": self.config.dataset},
        });
        if let Some(location) = &self.config.location {
            dataset["location"] = json!(location);
        }
        let url = format!("{}/projects/{}/datasets", self.base(), self.config.project);
        self.with_retries(|| async {
            match self.call(Method::POST, &url, Some(&dataset)).await {
                Ok(_) | Err(Failure::Conflict(_)) => Ok(()), // made, or there already
                Err(failure) => Err(failure),
            }
        })
        .await
        .map_err(Failure::into_store_error)?;
        for statement in statements(&self.substitute(TABLES_SQL)) {
            self.query(&statement, &[]).await?;
        }
        for (name, body) in VIEWS {
            let sql = format!("CREATE OR REPLACE VIEW {} AS\n{}", self.table(name), self.substitute(body));
            self.query(&sql, &[]).await?;
        }
        Ok(())
    }

    /// Each sku's thresholds as the ledger now has them (what `Store::put_policy` answered), stamped `now`: the
    /// newest row per sku is the policy (view `policies`). In production this could instead be a view over Cloud
    /// SQL with `EXTERNAL_QUERY`, so BigQuery reads the ledger's `sku_policies` itself and nothing is copied.
    pub async fn put_policies(&self, policies: &[Policy], now: Timestamp) -> Result<(), StoreError> {
        self.check_names()?;
        let updated_at = rfc3339(now);
        let rows: Vec<Row> = policies
            .iter()
            .map(|p| {
                let json = json!({
                    "sku": p.sku.as_str(),
                    "low_stock_days": p.low_stock_days,
                    "reorder_point": p.reorder_point,
                    "updated_at": updated_at,
                });
                Row::new(format!("{}@{}", p.sku.as_str(), now.timestamp_micros()), json)
            })
            .collect();
        self.insert_rows("sku_policies", &rows).await
    }

    /// Runs one GoogleSQL statement with named parameters and reads every result row (bounded: at most
    /// [`RESULT_PAGES_MAX`] pages). For the readers here, the tests, and ad hoc checks.
    pub async fn query(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<QueryRow>, StoreError> {
        self.run_query(sql, params).await.map_err(Failure::into_store_error)
    }

    /// `` `project.dataset.name` ``
    pub fn table(&self, name: &str) -> String {
        format!("`{}.{}.{name}`", self.config.project, self.config.dataset)
    }

    fn base(&self) -> String {
        format!("{}/bigquery/v2", self.api.endpoint())
    }

    fn substitute(&self, sql: &str) -> String {
        sql.replace("${project}", &self.config.project).replace("${dataset}", &self.config.dataset)
    }

    /// The names go into SQL (backquoted) and URLs as they are: only what BigQuery allows in them.
    fn check_names(&self) -> Result<(), StoreError> {
        let project_ok = !self.config.project.is_empty()
            && self.config.project.chars().all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
        let dataset_ok = !self.config.dataset.is_empty()
            && self.config.dataset.len() <= 1024
            && self.config.dataset.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if project_ok && dataset_ok {
            Ok(())
        } else {
            Err(StoreError::Config(format!(
                "bigquery: not a project and dataset name: {:?}.{:?}",
                self.config.project, self.config.dataset
            )))
        }
    }

    /// Streams `rows` into `table`, in requests of at most `batch_max` rows and [`REQUEST_BYTES_MAX`] bytes, in
    /// order; stops at the first request that fails.
    async fn insert_rows(&self, table: &str, rows: &[Row]) -> Result<(), StoreError> {
        let url = format!(
            "{}/projects/{}/datasets/{}/tables/{table}/insertAll",
            self.base(),
            self.config.project,
            self.config.dataset
        );
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len() && end - start < self.config.batch_max {
                let size = rows[end].bytes;
                if end > start && bytes + size > REQUEST_BYTES_MAX {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let body = json!({
                "skipInvalidRows": false,
                "ignoreUnknownValues": false,
                "rows": rows[start..end].iter().map(|r| &r.value).collect::<Vec<_>>(),
            });
            self.with_retries(|| async {
                let answer = self.call(Method::POST, &url, Some(&body)).await?;
                insert_errors(&answer)
            })
            .await
            .map_err(Failure::into_store_error)?;
            start = end;
        }
        Ok(())
    }

    /// jobs.query, then jobs.getQueryResults until the job is done and every page is read.
    async fn run_query(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<QueryRow>, Failure> {
        self.check_names().map_err(|e| Failure::Fatal(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_millis(self.config.query_timeout_ms.max(1));
        let wait_ms = self.config.query_timeout_ms.min(self.config.timeout_ms.saturating_sub(1_000).max(1_000));
        let mut request = json!({
            "query": sql,
            "useLegacySql": false,
            "timeoutMs": wait_ms,
            "formatOptions": {"useInt64Timestamp": true},
        });
        if !params.is_empty() {
            request["parameterMode"] = json!("NAMED");
            request["queryParameters"] = Value::Array(params.iter().map(QueryParam::to_json).collect());
        }
        if let Some(location) = &self.config.location {
            request["location"] = json!(location);
        }
        let url = format!("{}/projects/{}/queries", self.base(), self.config.project);
        // A query only reads (or, in apply_schema, is idempotent DDL): running it again after a failure is safe.
        let mut page = self
            .with_retries(|| async {
                let answer = self.call(Method::POST, &url, Some(&request)).await?;
                job_errors(&answer)?;
                Ok(answer)
            })
            .await?;
        let job = page["jobReference"].clone();
        let job_id = job["jobId"].as_str().unwrap_or_default().to_owned();
        let mut rows = Vec::new();
        let mut schema: Option<Vec<String>> = None;
        let mut pages = 0;
        loop {
            if page["jobComplete"].as_bool() == Some(true) {
                if schema.is_none() {
                    schema = Some(column_names(&page));
                }
                let names = schema.as_deref().unwrap_or_default();
                for row in page["rows"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    rows.push(decode_row(names, row)?);
                }
                pages += 1;
                let token = page["pageToken"].as_str().filter(|t| !t.is_empty());
                match token {
                    None => return Ok(rows),
                    Some(_) if pages >= RESULT_PAGES_MAX => {
                        return Err(Failure::Rejected(format!(
                            "query {job_id}: more than {RESULT_PAGES_MAX} pages of results"
                        )));
                    }
                    Some(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(Failure::transient(format!(
                    "query {job_id}: not done in {} ms",
                    self.config.query_timeout_ms
                )));
            }
            if job_id.is_empty() {
                return Err(Failure::Rejected("query: the answer names no job".to_owned()));
            }
            let mut results =
                format!("{}/projects/{}/queries/{job_id}?timeoutMs={wait_ms}", self.base(), self.config.project);
            if let Some(location) = job["location"].as_str() {
                results.push_str(&format!("&location={location}"));
            }
            if let Some(token) = page["pageToken"].as_str().filter(|t| !t.is_empty()) {
                results.push_str(&format!("&pageToken={}", encode_query_value(token)));
            }
            page = self
                .with_retries(|| async {
                    let answer = self.call(Method::GET, &results, None).await?;
                    job_errors(&answer)?;
                    Ok(answer)
                })
                .await?;
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed transiently `retries_max + 1` times.
    async fn with_retries<T, F, Fut>(&self, attempt: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Transient(reason, retry_after)) if tries < self.config.retries_max => {
                    let wait = backoff(tries, retry_after);
                    tracing::debug!(attempt = tries, ?wait, reason, "bigquery request failed; retrying");
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                Err(Failure::Transient(reason, _)) => {
                    return Err(Failure::transient(format!("{reason} (gave up after {} attempts)", tries + 1)));
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// One HTTP request; the answer's JSON on 2xx.
    async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let response = self.api.send(method, url, body.map(|b| b.to_string().into_bytes())).await?;
        response.json().await.map_err(|e| Failure::transient(describe(url, &e)))
    }

    async fn health_rows(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<Health>, StoreError> {
        let rows = self.query(sql, params).await?;
        let mut health = rows
            .iter()
            .map(|r| {
                let status = r.required("status", r.string("status"))?;
                let projected = r
                    .int("projected_stockout_at")?
                    .map(|us| {
                        DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| {
                            StoreError::Corrupt(format!("bigquery: projected_stockout_at out of range: {us}"))
                        })
                    })
                    .transpose()?;
                Ok(Health {
                    sku: r.required("sku", r.string("sku"))?,
                    available: r.required("available", r.int("available"))?,
                    units_sold_24h: r.required("units_sold_24h", r.int("units_sold_24h"))?,
                    units_sold_7d: r.required("units_sold_7d", r.int("units_sold_7d"))?,
                    velocity_per_day: r.required("velocity_per_day", r.float("velocity_per_day"))?,
                    days_of_cover: r.float("days_of_cover")?,
                    projected_stockout_at: projected,
                    status: HealthStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("bigquery: unknown status {status:?}")))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        health.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(health)
    }
}

/// Splits a file of `;`-terminated statements (a `;` that ends a line ends a statement; comment lines are kept
/// with the statement they precede). Empty statements (only comments) are dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        current.push_str(line);
        current.push('\n');
        let code = line.trim();
        if !code.starts_with("--") && code.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().trim_end_matches(';').trim().to_owned())
        .filter(|s| s.lines().any(|l| !l.trim().is_empty() && !l.trim().starts_with("--")))
        .collect()
}

/// One insertAll row and about what it adds to a request.
struct Row {
    value: Value,
    bytes: usize,
}

impl Row {
    fn new(insert_id: String, json: Value) -> Self {
        let value = json!({"insertId": insert_id, "json": json});
        let bytes = value.to_string().len() + 1;
        Self { value, bytes }
    }
}

/// An event as an `inventory_events` row: the movement's columns when it carries one, the whole event as JSON,
/// and `units_sold` / `is_order` from the domain's rules (the views only add them up).
fn event_row(e: &ObservedEvent, now: Timestamp) -> Row {
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

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[async_trait]
impl AnalyticsSink for BigQuery {
    /// All or error: on `Ok` every event is in `inventory_events`. On error some requests may have gone in; the
    /// caller's retry writes them again, which the views' dedupe by id absorbs.
    async fn write(&self, events: &[ObservedEvent]) -> Result<(), StoreError> {
        self.check_names()?;
        let now = Utc::now();
        let rows: Vec<Row> = events.iter().map(|e| event_row(e, now)).collect();
        self.insert_rows("inventory_events", &rows).await
    }
}

#[async_trait]
impl AnalyticsReader for BigQuery {
    async fn stock_health(&self, location: Option<&str>, _now: Timestamp) -> Result<Vec<Health>, StoreError> {
        // SUM of INT64 is INT64 in BigQuery, NUMERIC in the emulator (DuckDB's HUGEINT): the casts make both INT64.
        let columns = "sku, CAST(available AS INT64) AS available, CAST(units_sold_24h AS INT64) AS units_sold_24h, \
                       CAST(units_sold_7d AS INT64) AS units_sold_7d, velocity_per_day, days_of_cover, \
                       UNIX_MICROS(projected_stockout_at) AS projected_stockout_at, status";
        match location {
            None => {
                let sql = format!("SELECT {columns} FROM {} ORDER BY sku", self.table("stock_health"));
                self.health_rows(&sql, &[]).await
            }
            Some(location) => {
                let sql = format!(
                    "SELECT {columns} FROM {} WHERE location = @location ORDER BY sku",
                    self.table("stock_health_by_location")
                );
                self.health_rows(&sql, &[QueryParam::String("location", location.to_owned())]).await
            }
        }
    }

    async fn sales(
        &self,
        sku: &str,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<SalesPoint>, StoreError> {
        let Some(starts) = series_starts(bucket, from, to) else {
            return Ok(Vec::new());
        };
        let (Some(&first), Some(&last)) = (starts.first(), starts.last()) else {
            return Ok(Vec::new());
        };
        let view = match bucket {
            Bucket::Hour => "sales_hourly",
            Bucket::Day => "sales_daily",
        };
        let sql = format!(
            "SELECT UNIX_MICROS(start) AS start, CAST(units AS INT64) AS units, orders FROM {} \
             WHERE sku = @sku AND location IS NULL AND start >= @first AND start <= @last",
            self.table(view)
        );
        let micros = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
        let params = [
            QueryParam::String("sku", sku.to_owned()),
            QueryParam::Timestamp("first", micros(first)),
            QueryParam::Timestamp("last", micros(last)),
        ];
        let sparse = self
            .query(&sql, &params)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.required("start", r.int("start"))?,
                    r.required("units", r.int("units"))?,
                    r.required("orders", r.int("orders"))?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(fill_series(&starts, &sparse))
    }

    async fn top_sellers(&self, window: Window, limit: i64, _now: Timestamp) -> Result<Vec<TopSeller>, StoreError> {
        let view = match window {
            Window::Day => "top_sellers_24h",
            Window::Week => "top_sellers_7d",
        };
        let sql = format!(
            "SELECT sku, CAST(units AS INT64) AS units, orders FROM {} ORDER BY rank LIMIT {}",
            self.table(view),
            limit.clamp(1, TOP_SELLERS_MAX)
        );
        let rows = self
            .query(&sql, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(TopSeller {
                    sku: r.required("sku", r.string("sku"))?,
                    units: r.required("units", r.int("units"))?,
                    orders: r.required("orders", r.int("orders"))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(rank_top_sellers(rows, limit))
    }
}

/// Why a request did not go through, after its retries.
#[derive(Debug)]
enum Failure {
    /// BigQuery (or the network, or the token source) is unavailable or busy: try again later (after the
    /// server's `Retry-After`, if it sent one).
    Transient(String, Option<Duration>),
    /// BigQuery refused the request or a row in it (invalid SQL, an invalid row): retrying cannot help.
    Rejected(String),
    /// No request can succeed: the dataset or table is missing, permission is denied.
    Fatal(String),
    /// HTTP 409: it exists already.
    Conflict(String),
}

/// What a refused request means here: besides the status, BigQuery's error `reason` can make a 4xx worth another
/// try (rate and quota limits).
impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        let (status, reason, body, retry_after) = match refusal {
            Refusal::Transient(reason) => return Self::transient(reason),
            Refusal::Fatal(reason) => return Self::Fatal(reason),
            Refusal::Status { status, reason, body, retry_after } => (status, reason, body, retry_after),
        };
        let error_reason = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["errors"][0]["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        match status {
            s if s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error()
                || is_transient_reason(&error_reason) =>
            {
                Self::Transient(reason, retry_after)
            }
            StatusCode::CONFLICT => Self::Conflict(reason),
            // No such dataset or table, no permission: nothing here can succeed until someone acts.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Self::Fatal(reason),
            _ => Self::Rejected(reason),
        }
    }
}

impl Failure {
    fn transient(reason: String) -> Self {
        Self::Transient(reason, None)
    }

    fn into_store_error(self) -> StoreError {
        match self {
            Self::Transient(reason, _) => StoreError::transient(format!("bigquery: {reason}")),
            Self::Fatal(reason) => StoreError::Config(format!("bigquery: {reason}")),
            Self::Rejected(reason) | Self::Conflict(reason) => StoreError::internal(format!("bigquery: {reason}")),
        }
    }
}

/// BigQuery's error reasons that say "later": rate and quota limits, its own trouble.
fn is_transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "rateLimitExceeded"
            | "quotaExceeded"
            | "backendError"
            | "internalError"
            | "jobBackendError"
            | "jobInternalError"
    )
}

/// insertAll answers 200 with `insertErrors` for rows it did not take (the whole request, as skipInvalidRows is
/// off): rows BigQuery calls invalid are refused for good; rows only "stopped" by them, or timed out, are not
/// at fault, so without an invalid row the request is worth sending again.
fn insert_errors(answer: &Value) -> Result<(), Failure> {
    let Some(errors) = answer["insertErrors"].as_array().filter(|e| !e.is_empty()) else {
        return Ok(());
    };
    let mut invalid = Vec::new();
    let mut other = Vec::new();
    for row in errors {
        let index = row["index"].as_u64().unwrap_or_default();
        for e in row["errors"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let reason = e["reason"].as_str().unwrap_or_default();
            let text = format!("row {index}: {reason}: {}", e["message"].as_str().unwrap_or_default());
            if reason == "invalid" { invalid.push(text) } else { other.push(text) }
        }
    }
    if !invalid.is_empty() {
        return Err(Failure::Rejected(format!("insertAll refused rows: {}", truncate(&invalid.join("; "), 1_000))));
    }
    Err(Failure::transient(format!("insertAll did not take rows: {}", truncate(&other.join("; "), 1_000))))
}

/// A query job's errors: BigQuery answers a failed jobs.query with HTTP 400, but a job that failed later (and the
/// emulator, always) with 200 and `errors` / `status.errorResult`.
fn job_errors(answer: &Value) -> Result<(), Failure> {
    let first = answer["status"]["errorResult"]
        .as_object()
        .map(|e| Value::Object(e.clone()))
        .or_else(|| answer["errors"].as_array().and_then(|e| e.first().cloned()));
    let Some(error) = first else {
        return Ok(());
    };
    let reason = error["reason"].as_str().unwrap_or_default();
    let text = format!("query failed: {reason}: {}", truncate(error["message"].as_str().unwrap_or_default(), 1_000));
    Err(if is_transient_reason(reason) {
        Failure::transient(text)
    } else if reason == "notFound" || reason == "accessDenied" {
        Failure::Fatal(text)
    } else {
        Failure::Rejected(text)
    })
}

fn column_names(page: &Value) -> Vec<String> {
    page["schema"]["fields"]
        .as_array()
        .map(|fields| fields.iter().map(|f| f["name"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

/// `{"f": [{"v": ...}, ...]}` under the schema's names.
fn decode_row(names: &[String], row: &Value) -> Result<QueryRow, Failure> {
    let cells = row["f"].as_array().ok_or_else(|| Failure::Rejected(format!("query: not a row: {row}")))?;
    if cells.len() != names.len() {
        return Err(Failure::Rejected(format!("query: {} cells for {} columns", cells.len(), names.len())));
    }
    Ok(QueryRow(names.iter().cloned().zip(cells.iter().map(|c| c["v"].clone())).collect()))
}

/// Percent-encodes a query-string value (page tokens are opaque).
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use stockroom_store::ObservedMovement;

    use super::*;

    #[test]
    fn the_schema_files_split_into_their_statements() {
        let tables = statements(TABLES_SQL);
        assert_eq!(tables.len(), 2, "{tables:#?}");
        assert!(tables[0].contains("inventory_events") && tables[1].contains("sku_policies"));
        assert!(tables.iter().all(|s| !s.ends_with(';')));
        assert!(tables[0].contains("PARTITION BY DATE(occurred_at)") && tables[0].contains("CLUSTER BY sku"));
        // GoogleSQL has no '' escape inside a string (DuckDB, under the emulator, does): it would pass the tests
        // and fail in BigQuery.
        for (name, sql) in VIEWS.iter().copied().chain([("tables", TABLES_SQL)]) {
            assert!(!sql.contains("''"), "{name}");
        }
        assert_eq!(statements("-- only a comment\n"), Vec::<String>::new());
        assert_eq!(statements("SELECT 1;\nSELECT 2"), ["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn every_view_reads_the_deduped_events_and_names_the_dataset_by_placeholder() {
        for (name, body) in VIEWS {
            assert!(!body.contains("inventory_events`") || name == "events_deduped", "{name} reads the raw table");
            assert!(body.contains("${project}.${dataset}."), "{name}");
            assert!(!body.trim_end().ends_with(';'), "{name}: a view's query has no `;`");
        }
        let bq = BigQuery::new(BigQueryConfig::new("my-proj", "an_ds"), reqwest::Client::new());
        let sql = bq.substitute(VIEWS[0].1);
        assert!(sql.contains("`my-proj.an_ds.inventory_events`") && !sql.contains("${"), "{sql}");
    }

    #[test]
    fn names_that_could_break_out_of_the_sql_are_refused() {
        for (project, dataset) in [("p`; DROP", "d"), ("p", "d.e"), ("", "d"), ("p", "")] {
            let bq = BigQuery::new(BigQueryConfig::new(project, dataset), reqwest::Client::new());
            assert!(matches!(bq.check_names(), Err(StoreError::Config(_))), "{project:?}.{dataset:?}");
        }
        let bq =
            BigQuery::new(BigQueryConfig::new("example.com:proj-1", "stockroom_analytics"), reqwest::Client::new());
        assert!(bq.check_names().is_ok());
    }

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
    fn insert_errors_are_refusals_or_retries() {
        assert!(insert_errors(&json!({"insertErrors": []})).is_ok());
        let invalid = json!({"insertErrors": [
            {"index": 1, "errors": [{"reason": "invalid", "message": "bad"}]},
            {"index": 0, "errors": [{"reason": "stopped", "message": ""}]},
        ]});
        assert!(matches!(insert_errors(&invalid), Err(Failure::Rejected(r)) if r.contains("row 1")));
        let stopped = json!({"insertErrors": [{"index": 0, "errors": [{"reason": "timeout"}]}]});
        assert!(matches!(insert_errors(&stopped), Err(Failure::Transient(..))));
    }

    #[test]
    fn job_errors_in_a_200_answer_are_failures() {
        assert!(job_errors(&json!({"jobComplete": true, "rows": []})).is_ok());
        let e = json!({"errors": [{"reason": "invalidQuery", "message": "Syntax error"}]});
        assert!(matches!(job_errors(&e), Err(Failure::Rejected(_))));
        let e = json!({"status": {"errorResult": {"reason": "notFound", "message": "no table"}}});
        assert!(matches!(job_errors(&e), Err(Failure::Fatal(_))));
        let e = json!({"errors": [{"reason": "backendError"}]});
        assert!(matches!(job_errors(&e), Err(Failure::Transient(..))));
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

    #[test]
    fn page_tokens_are_percent_encoded() {
        assert_eq!(encode_query_value("BF2A==/x y"), "BF2A%3D%3D%2Fx%20y");
    }
}
