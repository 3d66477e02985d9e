//! Issue 9, defect 7: a hold books the lapsed allocations of its SKUs first, and that lookup must not read the
//! SKU's live holds or its history, or holds slow down as they pile up (804 → 316 holds/s at 17k live holds).
//! The database's own plan for the ledger's statement shows what it reads; `scripts/bench-holds` with
//! `LIVE_HOLDS=1000000` measures the throughput. Spanner's emulator does not plan like Spanner, so it is left out.

use std::collections::BTreeSet;

use stockroom_domain::Sku;
use stockroom_e2e::{Backend, TestDb, execute, settings_for};
use stockroom_store::{Inspect, SqlStore};

const LIVE: i64 = 60_000;
const HISTORY: i64 = 60_000;
const LAPSED: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_lapsed_lookup_is_bounded_by_state_and_expiry_not_just_the_sku() {
    let (db, plan) = plan_over_many_holds(Backend::Sqlite, "EXPLAIN QUERY PLAN ").await;
    let search =
        plan.iter().find(|l| l.contains("allocations")).unwrap_or_else(|| panic!("no allocations step: {plan:?}"));
    assert!(
        search.starts_with("SEARCH") && search.contains("sku=? AND state=? AND expires_at<?"),
        "the lookup must seek to (sku, 'held', expires_at <= now), not scan the SKU's allocations: {plan:?}"
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_lapsed_lookup_reads_a_handful_of_pages_among_many_live_holds() {
    let (db, plan) = plan_over_many_holds(Backend::Postgres, "EXPLAIN (ANALYZE, BUFFERS) ").await;
    // The top node's line counts every page the statement touched, its children's included.
    let buffers = plan.iter().find(|l| l.trim_start().starts_with("Buffers:")).unwrap_or_else(|| panic!("{plan:?}"));
    let pages: i64 = buffers
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| matches!(*k, "hit" | "read"))
        .filter_map(|(_, v)| v.parse::<i64>().ok())
        .sum();
    let top = plan.first().cloned().unwrap_or_default();
    assert!(top.contains(&format!("rows={LAPSED} ")), "the lookup finds the {LAPSED} lapsed allocations: {plan:?}");
    // Reading every allocation of the SKU touched 104 pages at 120,000 allocations (more as they grow); seeking to
    // the lapsed ones touches 10.
    assert!(pages <= 30, "{pages} pages read for {LAPSED} lapsed allocations among {}: {plan:#?}", LIVE + HISTORY);
    drop(db);
}

/// A SKU carrying `LIVE` live holds and `HISTORY` finished allocations over two locations, plus `LAPSED` holds past
/// their expiry; the plan the database makes for the ledger's lookup on it, behind `explain`.
async fn plan_over_many_holds(backend: Backend, explain: &str) -> (TestDb, Vec<String>) {
    let db = TestDb::new(backend).await;
    let store = SqlStore::connect(&settings_for(&db.url).store()).await.expect("a migrated store");
    drop(store);
    let now = chrono::Utc::now();
    let micros = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    let live_until = micros(now + chrono::Duration::hours(1));
    let rows = match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) {} FROM n",
            LIVE + HISTORY,
            seed_select(live_until)
        ),
        _ => format!("{} FROM generate_series(1, {}) AS n(i)", seed_select(live_until), LIVE + HISTORY),
    };
    execute(&db.url, &rows).await;
    let lapsed: Vec<String> = (0..LAPSED)
        .map(|i| format!("('lapsed-{i}', 0, 0, 'HOT', 'wh', 1, 1, 0, 'held', {}, NULL)", micros(now) - 1_000_000))
        .collect();
    execute(&db.url, &format!("INSERT INTO allocations {COLUMNS} VALUES {}", lapsed.join(", "))).await;
    if backend == Backend::Postgres {
        // Autovacuum keeps PostgreSQL's statistics; the embedded store never runs ANALYZE, so neither does its test.
        execute(&db.url, "ANALYZE").await;
    }

    let inspect = Inspect::open(&settings_for(&db.url).store()).await.expect("open the database");
    let skus: BTreeSet<Sku> = [Sku::parse("HOT").expect("a sku")].into();
    let plan = inspect.explain_lapsed_lookup(explain, &skus, now).await.expect("a plan");
    (db, plan)
}

const COLUMNS: &str = "(reservation_id, line_no, alloc_no, sku, location, line_quantity, quantity, committed, state, expires_at, reference)";

/// Row `i`: every other one a live hold, the rest committed; over two locations.
fn seed_select(live_until: i64) -> String {
    format!(
        "INSERT INTO allocations {COLUMNS} SELECT 'cart-' || i, 0, 0, 'HOT', CASE WHEN i % 3 = 0 THEN 'shop' ELSE 'wh' END, \
         1, 1, 0, CASE WHEN i % 2 = 0 THEN 'held' ELSE 'committed' END, {live_until}, NULL"
    )
}
