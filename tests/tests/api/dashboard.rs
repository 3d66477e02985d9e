//! The dashboard at `/` in headless chromium (`tests/browser/dashboard.mjs`, driven by playwright-core): the page
//! lists the stock, a sale made through the API shows up in its row without a reload, the counters and the sales
//! chart draw, and a screenshot lands in `target/test-artifacts/dashboard.png`. `scripts/browser-deps` installs
//! chromium and playwright-core when they are missing; a machine where that fails fails this test.
//!
//! On SQLite only: it tests the page, which reads the same API on every store, and a browser run is the slowest
//! test there is; the analytics it shows are tested on all three stores in `analytics.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use stockroom_e2e::{Api, Backend, TestApp};

/// Plenty of stock, a few sales: status ok. The browser sells more of it and watches the row.
const WATCHED_SKU: &str = "DASH-TEE";
/// Sold down to two units at over one a day: low.
const LOW_SKU: &str = "DASH-CAP";
/// Sold out: depleted.
const DEPLETED_SKU: &str = "DASH-MUG";
const BROWSER_SALE_QUANTITY: i64 = 3;
const ANALYTICS_WAIT_SECONDS: u64 = 20;
const BROWSER_RUN_SECONDS: u64 = 180;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the workspace").to_path_buf()
}

/// Runs `scripts/browser-deps`, then insists on what it should have left behind.
fn install_browser_deps(root: &Path) {
    let script = root.join("scripts/browser-deps");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); the dashboard test needs chromium and playwright-core:\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is still missing after scripts/browser-deps: install Debian's chromium"
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing or broken ({node:?}): the dashboard test runs tests/browser/dashboard.mjs with node"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules/playwright-core is missing after scripts/browser-deps"
    );
}

/// Holds and commits `quantity` of `sku`: a sale.
async fn sell(api: &Api, sku: &str, quantity: i64) {
    let held = api.hold(sku, quantity).await;
    assert_eq!(held.status, 201, "hold {quantity} of {sku}: {held:?}");
    let id = held.body["reservation_id"].as_str().expect("a reservation id").to_owned();
    let committed = api.send("POST", &format!("/v1/reservations/{id}/commit"), &[], None).await;
    assert_eq!(committed.status, 200, "commit {id}: {committed:?}");
}

/// Polls stock health until every SKU shows the figures the arrangement made (the projection lags the ledger a
/// little), so the browser starts from settled figures.
async fn wait_for_health(api: &Api, expected: &[(&str, i64, i64, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(ANALYTICS_WAIT_SECONDS);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = api.get("/v1/analytics/stock-health").await;
        if r.status == 200 {
            let rows = r.body.as_array().cloned().unwrap_or_default();
            let settled = expected.iter().all(|(sku, available, sold_24h, status)| {
                rows.iter().any(|row| {
                    row["sku"] == *sku
                        && row["available"] == *available
                        && row["units_sold_24h"] == *sold_24h
                        && row["status"] == *status
                })
            });
            if settled {
                return r.body;
            }
        }
        last = serde_json::json!({ "status": r.status, "body": r.body });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stock health did not show {expected:?} within {ANALYTICS_WAIT_SECONDS} s; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_a_sale_live_in_headless_chromium() {
    let root = workspace_root();
    install_browser_deps(&root);

    // Arrange: one SKU of each status, with sales in the last hour.
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.location("main", 1).await;
    app.receive(WATCHED_SKU, "main", 100).await;
    sell(&app, WATCHED_SKU, 6).await;
    app.receive(LOW_SKU, "main", 10).await;
    sell(&app, LOW_SKU, 8).await;
    app.receive(DEPLETED_SKU, "main", 3).await;
    sell(&app, DEPLETED_SKU, 3).await;
    wait_for_health(&app, &[(WATCHED_SKU, 94, 6, "ok"), (LOW_SKU, 2, 8, "low"), (DEPLETED_SKU, 0, 3, "depleted")])
        .await;

    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    // Act: the browser watches the row while it sells more.
    let script = root.join("tests/browser/dashboard.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(root.join("tests/browser"))
        .env("STOCKROOM_URL", &app.base)
        .env("SKU", WATCHED_SKU)
        .env("SALE_QUANTITY", BROWSER_SALE_QUANTITY.to_string())
        .env("SCREENSHOT_PATH", &screenshot)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(BROWSER_RUN_SECONDS), run)
        .await
        .unwrap_or_else(|_| panic!("{} ran longer than {BROWSER_RUN_SECONDS} s", script.display()))
        .unwrap_or_else(|e| panic!("could not run node {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    // Assert.
    assert!(
        out.status.success(),
        "{} failed ({}); screenshot (if any) at {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        out.status,
        screenshot.display()
    );
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", screenshot.display());
    let summary_line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
    println!("{summary_line}");
    let summary: Value = serde_json::from_str(summary_line).unwrap_or_else(|e| panic!("summary {summary_line}: {e}"));
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["after"]["units_sold_24h"], (6 + BROWSER_SALE_QUANTITY).to_string(), "{summary}");
    assert_eq!(summary["after"]["available"], (94 - BROWSER_SALE_QUANTITY).to_string(), "{summary}");
    assert_eq!(summary["low"], 1, "the low counter: {summary}");
    assert_eq!(summary["depleted"], 1, "the depleted counter: {summary}");
    println!("screenshot: {}", screenshot.display());
}
