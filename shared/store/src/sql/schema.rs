//! Versioned migrations, applied in order at start-up, each once.
//!
//! `schema_migrations` names every migration applied. A database that names one this binary does not know was
//! migrated by a newer binary: the store refuses to start on it rather than run old rules over a new schema.
//! Instances that start together take turns through a lease row in `schema_lock`, so each migration is applied
//! once; one that dies holding the lease is overtaken when the lease runs out. Migrations are DDL only, every
//! statement idempotent (`IF NOT EXISTS`), so one cut short by a crash is simply applied again. DDL goes through
//! [`Conn::apply_ddl`]: a statement at a time on SQLite and PostgreSQL, schema operations on Spanner.

use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::sql::{Conn, query};

/// Every migration, oldest first. Names sort in the order they apply.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_ledger", include_str!("../../migrations/0001_ledger.sql")),
    ("0002_events", include_str!("../../migrations/0002_events.sql")),
    ("0003_analytics", include_str!("../../migrations/0003_analytics.sql")),
    ("0004_allocations_held", include_str!("../../migrations/0004_allocations_held.sql")),
];

const BOOTSTRAP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS schema_lock (name TEXT PRIMARY KEY, holder TEXT NOT NULL, taken_at BIGINT NOT NULL)",
];

/// A holder that has not finished migrating after this long is taken to be dead.
const LEASE_SECONDS: i64 = 60;
/// How long a start waits for another instance's migration before giving up.
const WAIT_SECONDS_MAX: u64 = 180;
const POLL: Duration = Duration::from_millis(100);
/// Attempts at creating the bookkeeping tables: on PostgreSQL two concurrent `CREATE TABLE IF NOT EXISTS` can
/// still collide on the catalogue, and the loser's second attempt finds the table there.
const BOOTSTRAP_ATTEMPTS_MAX: usize = 5;

/// Brings the schema up to `target` (a migration's name; the newest when `None`). `holder` names this instance
/// in the lease row. The migrations this call applied, in order (none when another instance did them).
pub(crate) async fn migrate(
    c: &mut dyn Conn,
    holder: &str,
    target: Option<&str>,
) -> Result<Vec<&'static str>, StoreError> {
    let wanted: Vec<&(&str, &str)> = MIGRATIONS.iter().filter(|(name, _)| target.is_none_or(|t| *name <= t)).collect();
    bootstrap(c).await?;
    if pending(c, &wanted).await?.is_empty() {
        return Ok(Vec::new());
    }
    lock(c, holder).await?;
    let result = async {
        let mut applied = Vec::new();
        // Whoever held the lease before may have done the work.
        for (name, sql) in pending(c, &wanted).await? {
            c.begin().await?;
            c.apply_ddl(statements(sql)).await?;
            c.execute(
                query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING")
                    .bind(*name)
                    .bind(SystemClock.now()),
            )
            .await?;
            c.commit().await?;
            tracing::info!(version = name, "migration applied");
            applied.push(*name);
        }
        Ok(applied)
    }
    .await;
    unlock(c, holder).await?;
    result
}

async fn bootstrap(c: &mut dyn Conn) -> Result<(), StoreError> {
    let ddl: Vec<String> = BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect();
    let mut attempt = 1;
    loop {
        match c.apply_ddl(ddl.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < BOOTSTRAP_ATTEMPTS_MAX => {
                tracing::info!(error = %e, "creating the schema tables collided with another start; again");
                attempt += 1;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The wanted migrations not applied yet, in order; an error when the database has one this binary lacks.
async fn pending(
    c: &mut dyn Conn,
    wanted: &[&'static (&'static str, &'static str)],
) -> Result<Vec<&'static (&'static str, &'static str)>, StoreError> {
    // In a transaction of its own: a consistent read everywhere, and on Spanner's emulator one that does not wait
    // the third of a second its strong reads outside transactions do.
    c.begin().await?;
    let rows = c.fetch_all(query("SELECT version FROM schema_migrations ORDER BY version")).await?;
    c.commit().await?;
    let applied: Vec<String> = rows.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?;
    if let Some(newer) = applied.iter().find(|v| !MIGRATIONS.iter().any(|(name, _)| name == v)) {
        return Err(StoreError::Config(format!(
            "the database's schema has migration {newer}, which this binary does not know (its newest is {}): \
             it was migrated by a newer Stockroom; run that version",
            MIGRATIONS.last().map_or("none", |(name, _)| name)
        )));
    }
    Ok(wanted.iter().filter(|(name, _)| !applied.iter().any(|v| v == name)).copied().collect())
}

/// Takes the migration lease, waiting for another holder to finish (or for its lease to run out).
async fn lock(c: &mut dyn Conn, holder: &str) -> Result<(), StoreError> {
    let waited = std::time::Instant::now();
    loop {
        let now = SystemClock.now().timestamp_micros();
        c.begin().await?;
        let taken = c
            .execute(
                query("INSERT INTO schema_lock (name, holder, taken_at) VALUES ('migrate', $1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(holder)
                    .bind(now),
            )
            .await?
            == 1;
        let taken =
            taken || {
                let row = c.fetch_one(query("SELECT holder, taken_at FROM schema_lock WHERE name = 'migrate'")).await?;
                let (other, at) = (row.text(0)?, row.int(1)?);
                // Ours already (an earlier attempt of this start was cut short), or a dead holder's.
                other == holder
                    || at < now - LEASE_SECONDS * 1_000_000 && {
                        tracing::warn!(holder = %other, "a migration lease ran out; taking it over");
                        c.execute(
                    query("UPDATE schema_lock SET holder = $1, taken_at = $2 WHERE name = 'migrate' AND holder = $3")
                        .bind(holder)
                        .bind(now)
                        .bind(other),
                )
                .await?
                    == 1
                    }
            };
        c.commit().await?;
        if taken {
            return Ok(());
        }
        if waited.elapsed() > Duration::from_secs(WAIT_SECONDS_MAX) {
            return Err(StoreError::transient("another instance has been migrating the schema for too long"));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn unlock(c: &mut dyn Conn, holder: &str) -> Result<(), StoreError> {
    c.begin().await?;
    c.execute(query("DELETE FROM schema_lock WHERE name = 'migrate' AND holder = $1").bind(holder)).await?;
    c.commit().await
}

/// A migration file's statements: comments dropped, split at `;`.
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let without_comments: String =
        sql.lines().map(|l| l.split_once("--").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_and_their_statements_are_whole() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0), "names sort in the order they apply");
        for (name, sql) in MIGRATIONS {
            let stmts = statements(sql);
            assert!(!stmts.is_empty(), "{name}");
            for s in stmts {
                assert!(s.starts_with("CREATE "), "{name}: only idempotent DDL: {s}");
                assert!(s.contains("IF NOT EXISTS"), "{name}: {s}");
                assert!(!s.contains("--"), "{name}: {s}");
            }
        }
    }
}
