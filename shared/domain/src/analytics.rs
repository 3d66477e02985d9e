//! Stock health and sales, as the contract's Analytics section defines them. Pure: the figures come in (units
//! sold in the trailing windows, what is available now, the sku's thresholds) and `now` with them; the embedded
//! store and BigQuery both compute their answers through here, or through SQL that mirrors it line for line
//! (the BigQuery views), so the two agree.

use chrono::{DurationRound, TimeDelta};
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `low_stock_days` when the sku's policy names none.
pub const LOW_STOCK_DAYS_DEFAULT: i64 = 7;
/// The trailing window velocity is taken over, in days.
pub const VELOCITY_WINDOW_DAYS: i64 = 7;
/// Points one sales series answers at most (92 days of hours).
pub const SERIES_POINTS_MAX: i64 = 92 * 24;
/// Rows a top-sellers answer has at most, and by default.
pub const TOP_SELLERS_MAX: i64 = 100;
pub const TOP_SELLERS_DEFAULT: i64 = 10;

/// A movement's contribution to sales: a commit sells its units (the moment of sale); a release that takes
/// units out of `committed` is a return and unsells them. Nothing else is a sale.
pub fn units_sold(kind: &str, committed_delta: i64) -> i64 {
    match kind {
        "commit" => committed_delta.max(0),
        "release" => committed_delta.min(0),
        _ => 0,
    }
}

/// Whether a movement is an order for `orders` counts: a commit (one per reservation and sku).
pub fn is_order(kind: &str) -> bool {
    kind == "commit"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Low,
    Depleted,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Low => "low",
            Self::Depleted => "depleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(Self::Ok),
            "low" => Some(Self::Low),
            "depleted" => Some(Self::Depleted),
            _ => None,
        }
    }
}

/// A sku's thresholds with the defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub low_stock_days: i64,
    pub reorder_point: Option<i64>,
}

impl Thresholds {
    pub fn from_policy(low_stock_days: Option<i64>, reorder_point: Option<i64>) -> Self {
        Self { low_stock_days: low_stock_days.unwrap_or(LOW_STOCK_DAYS_DEFAULT), reorder_point }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::from_policy(None, None)
    }
}

/// One row of `GET /v1/analytics/stock-health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub sku: String,
    pub available: i64,
    pub units_sold_24h: i64,
    pub units_sold_7d: i64,
    pub velocity_per_day: f64,
    /// `available / velocity_per_day`; null when nothing sold in the trailing 7 days.
    pub days_of_cover: Option<f64>,
    /// `now + days_of_cover`, to the second; null with it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub projected_stockout_at: Option<Timestamp>,
    pub status: HealthStatus,
}

/// The contract's health of one sku (or one sku at one location): velocity over the trailing 7 days (returns
/// netted out, never below 0), days of cover (0 when nothing is available), the projected stock-out, and the
/// status, `depleted` before `low` before `ok`.
pub fn health(sku: &str, available: i64, sold_24h: i64, sold_7d: i64, t: Thresholds, now: Timestamp) -> Health {
    let velocity_per_day = sold_7d.max(0) as f64 / VELOCITY_WINDOW_DAYS as f64;
    let days_of_cover = (velocity_per_day > 0.0).then(|| available.max(0) as f64 / velocity_per_day);
    let projected_stockout_at = days_of_cover.and_then(|days| {
        // Beyond ~290 years the timestamp would overflow; such a date means "never" for every practical use.
        let seconds = (days * 86_400.0).round();
        (seconds < 1e10).then(|| truncate_to_second(now) + TimeDelta::seconds(seconds as i64))
    });
    let status = if available <= 0 {
        HealthStatus::Depleted
    } else if days_of_cover.is_some_and(|d| d < t.low_stock_days as f64)
        || t.reorder_point.is_some_and(|rp| available <= rp)
    {
        HealthStatus::Low
    } else {
        HealthStatus::Ok
    };
    Health {
        sku: sku.to_owned(),
        available,
        units_sold_24h: sold_24h,
        units_sold_7d: sold_7d,
        velocity_per_day,
        days_of_cover,
        projected_stockout_at,
        status,
    }
}

fn truncate_to_second(t: Timestamp) -> Timestamp {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

/// The width of a sales series' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    pub fn micros(self) -> i64 {
        match self {
            Self::Hour => 3_600_000_000,
            Self::Day => 86_400_000_000,
        }
    }

    /// The start of the bucket holding `at_micros` (UTC hours and days from the epoch).
    pub fn start_of(self, at_micros: i64) -> i64 {
        at_micros.div_euclid(self.micros()) * self.micros()
    }

    /// The span a series covers when the caller names none: 48 hours, or 30 days.
    pub fn default_span(self) -> TimeDelta {
        match self {
            Self::Hour => TimeDelta::hours(48),
            Self::Day => TimeDelta::days(30),
        }
    }
}

/// One point of `GET /v1/analytics/skus/{sku}/sales`: the bucket's start, net units sold, and orders (distinct
/// reservations that committed the sku in the bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SalesPoint {
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    pub units: i64,
    pub orders: i64,
}

/// A series' bucket starts (microseconds) from the bucket holding `from` to the one holding `to`, or `None`
/// when `to` is before `from` or the series would exceed [`SERIES_POINTS_MAX`] points.
pub fn series_starts(bucket: Bucket, from: Timestamp, to: Timestamp) -> Option<Vec<i64>> {
    let first = bucket.start_of(from.timestamp_micros());
    let last = bucket.start_of(to.timestamp_micros());
    if last < first || (last - first) / bucket.micros() >= SERIES_POINTS_MAX {
        return None;
    }
    Some((0..=(last - first) / bucket.micros()).map(|i| first + i * bucket.micros()).collect())
}

/// A dense series: every bucket of `starts`, with the sparse `(start, units, orders)` figures where there are
/// any and zeros elsewhere.
pub fn fill_series(starts: &[i64], sparse: &[(i64, i64, i64)]) -> Vec<SalesPoint> {
    let found: std::collections::HashMap<i64, (i64, i64)> = sparse.iter().map(|&(s, u, o)| (s, (u, o))).collect();
    starts
        .iter()
        .filter_map(|&s| {
            let start = chrono::DateTime::from_timestamp_micros(s)?;
            let (units, orders) = found.get(&s).copied().unwrap_or_default();
            Some(SalesPoint { start, units, orders })
        })
        .collect()
}

/// The trailing window of `GET /v1/analytics/top-sellers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Window {
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    pub fn span(self) -> TimeDelta {
        match self {
            Self::Day => TimeDelta::hours(24),
            Self::Week => TimeDelta::days(VELOCITY_WINDOW_DAYS),
        }
    }
}

/// One row of `GET /v1/analytics/top-sellers`: net units sold in the window and orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSeller {
    pub sku: String,
    pub units: i64,
    pub orders: i64,
}

/// Best sellers first (more units, then more orders, then sku), only skus that sold, at most `limit`.
pub fn rank_top_sellers(mut rows: Vec<TopSeller>, limit: i64) -> Vec<TopSeller> {
    rows.retain(|r| r.units > 0);
    rows.sort_by(|a, b| b.units.cmp(&a.units).then(b.orders.cmp(&a.orders)).then(a.sku.cmp(&b.sku)));
    rows.truncate(usize::try_from(limit.clamp(1, TOP_SELLERS_MAX)).unwrap_or(1));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn sales_are_commits_net_of_returns() {
        assert_eq!(units_sold("commit", 3), 3);
        assert_eq!(units_sold("release", -2), -2);
        assert_eq!(units_sold("release", 0), 0);
        for kind in ["hold", "fulfil", "expire", "adjustment"] {
            assert_eq!(units_sold(kind, -4), 0, "{kind}");
        }
    }

    #[test]
    fn health_follows_the_contract() {
        let now = at("2026-01-10T12:00:00.250Z");
        // 14 sold in 7 days: 2 a day; 9 available lasts 4.5 days, under the default 7.
        let h = health("A", 9, 3, 14, Thresholds::default(), now);
        assert_eq!(h.velocity_per_day, 2.0);
        assert_eq!(h.days_of_cover, Some(4.5));
        assert_eq!(h.projected_stockout_at, Some(at("2026-01-15T00:00:00Z")));
        assert_eq!(h.status, HealthStatus::Low);
        // Same figures, a 3-day threshold: ok.
        let h = health("A", 9, 3, 14, Thresholds::from_policy(Some(3), None), now);
        assert_eq!(h.status, HealthStatus::Ok);
        // Nothing sold: no cover, no stock-out, ok unless at the reorder point.
        let h = health("A", 5, 0, 0, Thresholds::default(), now);
        assert_eq!((h.velocity_per_day, h.days_of_cover, h.projected_stockout_at), (0.0, None, None));
        assert_eq!(h.status, HealthStatus::Ok);
        assert_eq!(health("A", 5, 0, 0, Thresholds::from_policy(None, Some(5)), now).status, HealthStatus::Low);
        assert_eq!(health("A", 6, 0, 0, Thresholds::from_policy(None, Some(5)), now).status, HealthStatus::Ok);
        // Nothing available: depleted, whatever the thresholds; cover 0, stock-out now.
        let h = health("A", 0, 1, 7, Thresholds::default(), now);
        assert_eq!(h.status, HealthStatus::Depleted);
        assert_eq!(h.days_of_cover, Some(0.0));
        assert_eq!(health("A", -3, 0, 0, Thresholds::default(), now).status, HealthStatus::Depleted);
        // More returned than sold: velocity 0, not negative.
        assert_eq!(health("A", 5, -2, -2, Thresholds::default(), now).velocity_per_day, 0.0);
    }

    #[test]
    fn series_are_dense_and_bounded() {
        let from = at("2026-01-10T10:30:00Z");
        let to = at("2026-01-10T13:00:00Z");
        let starts = series_starts(Bucket::Hour, from, to).unwrap_or_default();
        assert_eq!(starts.len(), 4);
        let s = fill_series(&starts, &[(starts[1], 5, 2)]);
        assert_eq!(s[0], SalesPoint { start: at("2026-01-10T10:00:00Z"), units: 0, orders: 0 });
        assert_eq!(s[1], SalesPoint { start: at("2026-01-10T11:00:00Z"), units: 5, orders: 2 });
        assert_eq!(series_starts(Bucket::Hour, to, from), None);
        assert_eq!(series_starts(Bucket::Hour, from, from + TimeDelta::days(93)), None);
        assert_eq!(series_starts(Bucket::Day, from, from + TimeDelta::days(93)).map(|s| s.len()), Some(94));
        assert_eq!(Bucket::Day.start_of(-1), -86_400_000_000);
    }

    #[test]
    fn top_sellers_rank_by_units_then_orders_then_sku() {
        let row = |sku: &str, units, orders| TopSeller { sku: sku.to_owned(), units, orders };
        let ranked =
            rank_top_sellers(vec![row("b", 5, 1), row("a", 5, 1), row("c", 9, 2), row("d", 0, 0), row("e", 5, 3)], 3);
        assert_eq!(ranked, vec![row("c", 9, 2), row("e", 5, 3), row("a", 5, 1)]);
    }
}
