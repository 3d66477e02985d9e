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
//!
//! Here the type and its settings; `client` makes the requests and classifies failures, `rows` encodes and
//! decodes rows, `schema` creates the tables and views, `analytics` implements the two store traits.

use stockroom_store::StoreError;

use stockroom_google::{Api, Auth, emulator_endpoint};

mod analytics;
mod client;
mod rows;
mod schema;

pub use rows::{QueryParam, QueryRow};

/// BigQuery's global endpoint (paths start with `/bigquery/v2`).
pub const BIGQUERY_ENDPOINT: &str = "https://bigquery.googleapis.com";
/// The dataset the analytics live in unless configured otherwise (`STOCKROOM_BIGQUERY_DATASET`'s default).
pub const ANALYTICS_DATASET: &str = "stockroom";
/// BigQuery recommends at most 500 rows an insertAll request (it allows 50,000).
pub const INSERT_ROWS_MAX: usize = 500;
/// Bytes an insertAll request carries at most (BigQuery's limit is 10 MB); a single larger row goes alone.
pub const REQUEST_BYTES_MAX: usize = 5_000_000;

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

/// Streams events into BigQuery (as [`AnalyticsSink`]) and reads the figures back (as [`AnalyticsReader`]).
///
/// [`AnalyticsSink`]: stockroom_store::AnalyticsSink
/// [`AnalyticsReader`]: stockroom_store::AnalyticsReader
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

    /// `` `project.dataset.name` ``
    pub fn table(&self, name: &str) -> String {
        format!("`{}.{}.{name}`", self.config.project, self.config.dataset)
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
