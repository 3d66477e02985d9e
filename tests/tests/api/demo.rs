//! `stockroom demo` end to end: the real entry point (through `stockroom-e2e-server`, which is `cli::main`) runs its
//! shop for a bounded time and stops by itself; then `serve` opens the same database and the ledger is read over
//! HTTP. Reading after the demo stopped (rather than while it runs) sees a ledger that no longer moves, and shows
//! on the way that what the demo acknowledged survived its shutdown.
//!
//! `ChildApp` always runs `serve`, so the demo child is started here; `ChildApp` serves the inspection.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use stockroom_e2e::{Backend, ChildApp, TestDb};

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");
const SEED: &str = "7";
/// Checkouts a second. The Spanner emulator applies one read-write transaction at a time (about 60 a second
/// here, some four for a checkout), so the shop runs slower there; the test's claims do not depend on the rate.
fn rate(backend: Backend) -> &'static str {
    match backend {
        Backend::Spanner => "12",
        Backend::Sqlite | Backend::Postgres => "60",
    }
}
const DEMO_SECONDS: u64 = 20;

on_every_store!(a_demo_run_books_every_kind_of_movement_and_never_oversells);

async fn a_demo_run_books_every_kind_of_movement_and_never_oversells(backend: Backend) {
    let db = TestDb::new(backend).await;

    // Arrange / act: the demo, fast, with carts abandoned after a second or two so expiries happen in the run.
    let mut demo = tokio::process::Command::new(SERVER);
    if backend == Backend::Spanner {
        demo.env("SPANNER_EMULATOR_HOST", stockroom_e2e::spanner_emulator_host());
    }
    let mut demo = demo
        .args(["demo", "--seed", SEED, "--rate", rate(backend), "--abandoned-ttl-seconds", "2"])
        .args(["--duration-seconds", &DEMO_SECONDS.to_string()])
        .env("PORT", "0")
        .env("STOCKROOM_BIND", "127.0.0.1")
        .env("STOCKROOM_DATABASE_URL", &db.url)
        // The demo's own summaries, not a line per request.
        .env("RUST_LOG", "warn,stockroom::demo=info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stockroom demo");
    let status = tokio::time::timeout(Duration::from_secs(DEMO_SECONDS + 90), demo.wait())
        .await
        .expect("the demo stops by itself after --duration-seconds")
        .expect("wait for the demo");
    assert!(status.success(), "stockroom demo (seed {SEED}) exited with {status}");

    let app = ChildApp::spawn(SERVER, &db.url).await;
    let movements = app.all_movements("").await;

    // Every kind of movement the shop's actions make.
    let kinds: BTreeSet<&str> = movements.iter().filter_map(|m| m["kind"].as_str()).collect();
    for kind in ["adjustment", "hold", "commit", "fulfil", "release", "expire"] {
        assert!(kinds.contains(kind), "seed {SEED}: no {kind} movement in {kinds:?}");
    }

    // The flash sale: many paid orders of one SKU (flash orders carry `flash-<sale>-<n>` references).
    let mut flash_commits: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &movements {
        if m["kind"] == "commit" && m["reference"].as_str().is_some_and(|r| r.starts_with("flash-")) {
            *flash_commits.entry(m["sku"].as_str().unwrap_or_default()).or_default() += 1;
        }
    }
    let most = flash_commits.values().max().copied().unwrap_or(0);
    assert!(most >= 20, "seed {SEED}: the flash sale sold too little: {flash_commits:?}");

    // Never negative: replaying the ledger per (sku, location), every figure stays at or above zero at every
    // step, and so does what was left to sell (nothing in the demo sets a safety stock).
    let mut levels: BTreeMap<(String, String), [i64; 3]> = BTreeMap::new();
    for m in &movements {
        let key = (m["sku"].as_str().unwrap_or("").to_owned(), m["location"].as_str().unwrap_or("").to_owned());
        let l = levels.entry(key.clone()).or_default();
        l[0] += m["on_hand_delta"].as_i64().unwrap_or(0);
        l[1] += m["reserved_delta"].as_i64().unwrap_or(0);
        l[2] += m["committed_delta"].as_i64().unwrap_or(0);
        assert!(l.iter().all(|v| *v >= 0), "seed {SEED}: {key:?} went negative {l:?} at {m}");
        assert!(l[0] - l[1] - l[2] >= 0, "seed {SEED}: {key:?} oversold {l:?} at {m}");
    }

    // And what the stock endpoint says now.
    let skus: BTreeSet<&str> = levels.keys().map(|(sku, _)| sku.as_str()).collect();
    let r = app.get(&format!("/v1/stock?skus={}", skus.into_iter().collect::<Vec<_>>().join(","))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let stock = r.body.as_array().cloned().unwrap_or_default();
    assert!(!stock.is_empty(), "no stock answered: {r:?}");
    for s in &stock {
        for l in s["locations"].as_array().into_iter().flatten() {
            let available = l["available"].as_i64().unwrap_or(i64::MIN);
            assert!(available >= 0, "seed {SEED}: {} at {} shows {available} available", s["sku"], l["location"]);
        }
        let on_hand: i64 = levels.iter().filter(|((sku, _), _)| s["sku"] == sku.as_str()).map(|(_, l)| l[0]).sum();
        assert_eq!(s["total"]["on_hand"].as_i64(), Some(on_hand), "seed {SEED}: ledger and level disagree: {s}");
    }
}
