//! Requests to BigQuery's REST API: insertAll in bounded batches, jobs.query and its result pages, retries with
//! backoff, and what each failure means.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use stockroom_store::StoreError;

use super::rows::{Row, column_names, decode_row};
use super::{BigQuery, QueryParam, QueryRow, REQUEST_BYTES_MAX};
use stockroom_google::{Refusal, backoff, describe, truncate};

/// Result pages one query reads at most (each up to BigQuery's 10 MB page).
const RESULT_PAGES_MAX: usize = 100;

impl BigQuery {
    /// Runs one GoogleSQL statement with named parameters and reads every result row (bounded: at most
    /// [`RESULT_PAGES_MAX`] pages). For the readers here, the tests, and ad hoc checks.
    pub async fn query(&self, sql: &str, params: &[QueryParam]) -> Result<Vec<QueryRow>, StoreError> {
        self.run_query(sql, params).await.map_err(Failure::into_store_error)
    }

    pub(super) fn base(&self) -> String {
        format!("{}/bigquery/v2", self.api.endpoint())
    }

    /// Streams `rows` into `table`, in requests of at most `batch_max` rows and [`REQUEST_BYTES_MAX`] bytes, in
    /// order; stops at the first request that fails.
    pub(super) async fn insert_rows(&self, table: &str, rows: &[Row]) -> Result<(), StoreError> {
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
    pub(super) async fn with_retries<T, F, Fut>(&self, attempt: F) -> Result<T, Failure>
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
    pub(super) async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let response = self.api.send(method, url, body.map(|b| b.to_string().into_bytes())).await?;
        response.json().await.map_err(|e| Failure::transient(describe(url, &e)))
    }
}

/// Why a request did not go through, after its retries.
#[derive(Debug)]
pub(super) enum Failure {
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

    pub(super) fn into_store_error(self) -> StoreError {
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
    use super::*;

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
    fn page_tokens_are_percent_encoded() {
        assert_eq!(encode_query_value("BF2A==/x y"), "BF2A%3D%3D%2Fx%20y");
    }
}
