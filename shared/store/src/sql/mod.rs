//! The ledger's rules over SQL, written once for every backend.
//!
//! The modules below (`ledger`, `queues`, `analytics`, `schema`) speak to a [`Conn`]: a connection that runs
//! parameterised statements (`$1`, `$2`, …) and opens nested transactions. Each backend gives one: SQLite and
//! PostgreSQL through sqlx, Spanner through its REST API. Where their SQL parts ways, the difference is named
//! in [`Dialect`] and nowhere else.

pub(crate) mod analytics;
pub(crate) mod ledger;
pub(crate) mod queues;
pub(crate) mod schema;

use std::borrow::Cow;

use async_trait::async_trait;
use stockroom_domain::Timestamp;

use crate::error::StoreError;

/// Where the three databases part ways. Everything else is the same SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    /// Spanner's PostgreSQL dialect.
    Spanner,
}

impl Dialect {
    /// Row locks on the rows a statement reads. SQLite has one writer, so a transaction already excludes every
    /// other; Spanner refuses `FOR UPDATE` ("ROW MARK clauses are not supported") because every read in a
    /// read-write transaction takes its locks anyway.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE",
            Self::Sqlite | Self::Spanner => "",
        }
    }
}

/// Parameters one statement may carry at most: Spanner allows 950 ("Number of parameters in query exceeds the
/// maximum allowed limit of 950"); SQLite and PostgreSQL allow more. Multi-row statements are cut to fit.
pub(crate) const PARAMS_MAX: usize = 950;

/// `$start, $start+1, …` for `n` parameters.
pub(crate) fn list(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A value bound to a `$n` parameter. The schema has two column types: `BIGINT` and `TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

/// Times are stored as microseconds since the epoch.
impl From<Timestamp> for Param {
    fn from(v: Timestamp) -> Self {
        Self::Int(Some(v.timestamp_micros()))
    }
}

/// One statement and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub(crate) sql: Cow<'static, str>,
    pub(crate) params: Vec<Param>,
}

/// A statement to bind parameters to, in `$n` order.
pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query { sql: sql.into(), params: Vec::new() }
}

impl Query {
    pub(crate) fn bind(mut self, value: impl Into<Param>) -> Self {
        self.params.push(value.into());
        self
    }

    pub(crate) fn bind_all<P: Into<Param>>(mut self, values: impl IntoIterator<Item = P>) -> Self {
        self.params.extend(values.into_iter().map(Into::into));
        self
    }
}

/// A result row, read by column position. Each backend keeps its own representation; the getters convert.
pub enum Row {
    Sqlx(sqlx::any::AnyRow),
    /// The SQLite writer's (rusqlite): the schema's columns are `INTEGER`, `TEXT` or `NULL`.
    Sqlite(Vec<rusqlite::types::Value>),
    /// Spanner's JSON: `INT64` as a decimal string, `STRING` as a string, `NULL` as null.
    Spanner(Vec<serde_json::Value>),
}

impl Row {
    /// How many columns the row has.
    pub fn columns(&self) -> usize {
        match self {
            Self::Sqlx(row) => sqlx::Row::len(row),
            Self::Sqlite(values) => values.len(),
            Self::Spanner(values) => values.len(),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self {
            Self::Sqlx(row) => Ok(sqlx::Row::try_get(row, i)?),
            Self::Sqlite(values) => match values.get(i) {
                None | Some(rusqlite::types::Value::Null) => Ok(None),
                Some(rusqlite::types::Value::Integer(n)) => Ok(Some(*n)),
                Some(other) => Err(StoreError::Corrupt(format!("column {i}: {other:?} is not an integer"))),
            },
            Self::Spanner(values) => match values.get(i) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => {
                    s.parse().map(Some).map_err(|_| StoreError::Corrupt(format!("column {i}: {s:?} is not an integer")))
                }
                Some(serde_json::Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| StoreError::Corrupt(format!("column {i}: {n} is not an integer"))),
                Some(other) => Err(StoreError::Corrupt(format!("column {i}: {other} is not an integer"))),
            },
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlx(row) => Ok(sqlx::Row::try_get(row, i)?),
            Self::Sqlite(values) => match values.get(i) {
                None | Some(rusqlite::types::Value::Null) => Ok(None),
                Some(rusqlite::types::Value::Text(s)) => Ok(Some(s.clone())),
                Some(other) => Err(StoreError::Corrupt(format!("column {i}: {other:?} is not text"))),
            },
            Self::Spanner(values) => match values.get(i) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(StoreError::Corrupt(format!("column {i}: {other} is not text"))),
            },
        }
    }

    /// A microsecond column as a time.
    pub fn time(&self, i: usize) -> Result<Timestamp, StoreError> {
        from_micros(self.int(i)?)
    }

    /// A text column parsed into a domain name (sku, location, …).
    pub(crate) fn parsed<T, E: std::fmt::Display>(
        &self,
        i: usize,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        let raw = self.text(i)?;
        parse(&raw).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }
}

pub(crate) fn from_micros(us: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("timestamp {us}")))
}

/// A connection as the rules use it. `begin` nests: the outermost is a transaction, inner ones are savepoints
/// (where the backend has them). Outside any transaction, reads run on their own (autocommit, or Spanner's
/// strong single-use reads) and writes are the backend's to refuse.
#[async_trait]
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    async fn begin(&mut self) -> Result<(), StoreError>;
    async fn commit(&mut self) -> Result<(), StoreError>;
    async fn rollback(&mut self) -> Result<(), StoreError>;
    /// Runs a statement; the rows it changed.
    async fn execute(&mut self, q: Query) -> Result<u64, StoreError>;
    async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>, StoreError>;
    /// Schema statements, in order (migrations). In a transaction where the backend's DDL can be (SQLite,
    /// PostgreSQL); as schema operations, waited for, on Spanner.
    async fn apply_ddl(&mut self, statements: Vec<String>) -> Result<(), StoreError>;

    /// Runs statements in order, in one round trip where the backend can (Spanner's `ExecuteBatchDml`); the rows
    /// each changed. Stops at the first failure.
    async fn execute_all(&mut self, qs: Vec<Query>) -> Result<Vec<u64>, StoreError> {
        let mut changed = Vec::with_capacity(qs.len());
        for q in qs {
            changed.push(self.execute(q).await?);
        }
        Ok(changed)
    }

    async fn fetch_optional(&mut self, q: Query) -> Result<Option<Row>, StoreError> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    async fn fetch_one(&mut self, q: Query) -> Result<Row, StoreError> {
        self.fetch_optional(q).await?.ok_or_else(|| StoreError::Corrupt("a query that always answers did not".into()))
    }
}
