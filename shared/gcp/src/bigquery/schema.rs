//! The schema from `analytics/bigquery/`: the tables, then the views, created or replaced by `apply_schema`.

use reqwest::Method;
use serde_json::json;
use stockroom_store::StoreError;

use super::BigQuery;
use super::client::Failure;

/// The schema: the tables, then the views in dependency order. The SQL lives in `analytics/bigquery/` (the files
/// terraform will take over), with `${project}` and `${dataset}` for the names.
const TABLES_SQL: &str = include_str!("../../../../analytics/bigquery/tables.sql");
const VIEWS: [(&str, &str); 14] = [
    ("events_deduped", include_str!("../../../../analytics/bigquery/views/events_deduped.sql")),
    ("movements", include_str!("../../../../analytics/bigquery/views/movements.sql")),
    ("policies", include_str!("../../../../analytics/bigquery/views/policies.sql")),
    ("stock_levels", include_str!("../../../../analytics/bigquery/views/stock_levels.sql")),
    ("sales", include_str!("../../../../analytics/bigquery/views/sales.sql")),
    ("sales_hourly", include_str!("../../../../analytics/bigquery/views/sales_hourly.sql")),
    ("sales_daily", include_str!("../../../../analytics/bigquery/views/sales_daily.sql")),
    ("stock_figures", include_str!("../../../../analytics/bigquery/views/stock_figures.sql")),
    ("stock_health_rows", include_str!("../../../../analytics/bigquery/views/stock_health_rows.sql")),
    ("stock_health", include_str!("../../../../analytics/bigquery/views/stock_health.sql")),
    ("stock_health_by_location", include_str!("../../../../analytics/bigquery/views/stock_health_by_location.sql")),
    ("top_sellers", include_str!("../../../../analytics/bigquery/views/top_sellers.sql")),
    ("top_sellers_24h", include_str!("../../../../analytics/bigquery/views/top_sellers_24h.sql")),
    ("top_sellers_7d", include_str!("../../../../analytics/bigquery/views/top_sellers_7d.sql")),
];

impl BigQuery {
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

    fn substitute(&self, sql: &str) -> String {
        sql.replace("${project}", &self.config.project).replace("${dataset}", &self.config.dataset)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigquery::BigQueryConfig;

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
}
