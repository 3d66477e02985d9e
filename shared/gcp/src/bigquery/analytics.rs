//! BigQuery as the cloud's `AnalyticsSink` (events into `inventory_events`, policies into `sku_policies`) and
//! `AnalyticsReader` (the figures from the views).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use stockroom_domain::Timestamp;
use stockroom_domain::analytics::{
    Bucket, Health, HealthStatus, SalesPoint, TOP_SELLERS_MAX, TopSeller, Window, fill_series, rank_top_sellers,
    series_starts,
};
use stockroom_store::{AnalyticsReader, AnalyticsSink, ObservedEvent, Policy, StoreError};

use super::rows::{Row, event_row, rfc3339};
use super::{BigQuery, QueryParam};

impl BigQuery {
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
