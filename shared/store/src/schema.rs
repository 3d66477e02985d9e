//! Embedded migrations, applied at start-up. Every statement is idempotent (`IF NOT EXISTS`), so instances
//! starting together cannot trip over each other and no advisory lock is needed.

use sqlx::AnyConnection;

use crate::error::StoreError;

const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_ledger", include_str!("../migrations/0001_ledger.sql")),
    ("0002_events", include_str!("../migrations/0002_events.sql")),
    ("0003_analytics", include_str!("../migrations/0003_analytics.sql")),
];

pub(crate) async fn migrate(conn: &mut AnyConnection) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, sql) in MIGRATIONS {
        let done: Option<(String,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(*version)
            .fetch_optional(&mut *conn)
            .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(*version)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&mut *conn)
        .await?;
        tracing::info!(version, "migration applied");
    }
    Ok(())
}
