//! Invariants 1, 2, 3 and 6 of CONTRACT.md under real concurrency: many clients over real HTTP at once.

use std::collections::BTreeMap;

use futures::future::join_all;
use serde_json::{Value, json};
use stockroom_e2e::{Api, Backend, Reply, Rng, TestApp, replayed_levels};

/// Clients racing at once in these tests.
const CLIENTS: usize = 64;

on_every_store!(
    sixty_four_shoppers_racing_for_the_last_units_never_oversell,
    racing_multi_line_holds_hold_every_line_or_none,
    a_refused_hold_among_racing_holds_leaves_nothing_and_fails_no_other,
    racing_requests_with_one_idempotency_key_apply_once,
    racing_adjustments_with_one_key_apply_once,
    a_random_concurrent_workload_keeps_the_ledger_consistent,
    lapsed_holds_free_their_units_for_racing_shoppers_and_cannot_be_committed,
);

/// Runs `n` requests, `CLIENTS` at a time, each built by `f(i)`.
async fn race<F, Fut>(n: usize, f: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let mut replies = Vec::with_capacity(n);
    let mut pending: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    // All are spawned at once; the client pool opens up to CLIENTS-plus connections, so they truly overlap.
    for h in pending.drain(..) {
        replies.push(h.await.expect("request task"));
    }
    replies
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

fn assert_no_server_errors(replies: &[Reply]) {
    for r in replies {
        assert!(r.status < 500, "server error under load: {r:?}");
    }
}

async fn figures(api: &Api, sku: &str) -> (i64, i64, i64, i64) {
    let s = api.stock(sku).await;
    let t = &s["total"];
    (
        t["on_hand"].as_i64().unwrap_or(-1),
        t["reserved"].as_i64().unwrap_or(-1),
        t["committed"].as_i64().unwrap_or(-1),
        t["available"].as_i64().unwrap_or(-1),
    )
}

/// Every stored row agrees with the replayed ledger, and no row promises more than it has.
async fn assert_ledger_consistent(api: &Api, skus: &[&str]) {
    let replayed = replayed_levels(api).await;
    for sku in skus {
        let s = api.stock(sku).await;
        for loc in s["locations"].as_array().cloned().unwrap_or_default() {
            let key = (sku.to_string(), loc["location"].as_str().unwrap_or("").to_owned());
            let stored = (
                loc["on_hand"].as_i64().unwrap_or(-1),
                loc["reserved"].as_i64().unwrap_or(-1),
                loc["committed"].as_i64().unwrap_or(-1),
            );
            assert_eq!(replayed.get(&key).copied().unwrap_or_default(), stored, "replay of {key:?}");
            assert!(loc["available"].as_i64().unwrap_or(-1) >= 0, "oversold {key:?}: {loc}");
        }
    }
}

async fn sixty_four_shoppers_racing_for_the_last_units_never_oversell(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("front", 1).await;
    app.location("back", 2).await;
    app.receive("HOT", "front", 6).await;
    app.receive("HOT", "back", 4).await;

    let api = app.api.clone();
    let replies = race(CLIENTS * 2, move |i| {
        let api = api.clone();
        async move { api.hold("HOT", 1 + (i % 2) as i64).await }
    })
    .await;

    assert_no_server_errors(&replies);
    let held: i64 =
        replies.iter().filter(|r| r.status == 201).map(|r| r.body["lines"][0]["quantity"].as_i64().unwrap_or(0)).sum();
    for r in replies.iter().filter(|r| r.status == 409) {
        assert_eq!(r.error_code(), "insufficient_stock", "{r:?}");
    }
    assert_eq!(count(&replies, 201) + count(&replies, 409), replies.len());
    // Ten units: every one promised once, none twice. (A 2-unit hold can fail on the last unit, so at most
    // one unit may stay unsold.)
    assert!(held == 10 || held == 9, "held {held} of 10");
    let (on_hand, reserved, committed, available) = figures(&app, "HOT").await;
    assert_eq!((on_hand, reserved, committed, available), (10, held, 0, 10 - held));
    assert_ledger_consistent(&app, &["HOT"]).await;
}

async fn racing_multi_line_holds_hold_every_line_or_none(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("wh", 1).await;
    app.receive("A", "wh", 20).await;
    app.receive("B", "wh", 7).await;

    let api = app.api.clone();
    let replies = race(CLIENTS * 2, move |i| {
        let api = api.clone();
        let lines = match i % 3 {
            0 => json!([{ "sku": "A", "quantity": 1 }, { "sku": "B", "quantity": 1 }]),
            1 => json!([{ "sku": "A", "quantity": 2 }]),
            _ => json!([{ "sku": "B", "quantity": 1 }, { "sku": "A", "quantity": 1 }]),
        };
        async move { api.json("POST", "/v1/reservations", &json!({ "lines": lines })).await }
    })
    .await;

    assert_no_server_errors(&replies);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for r in replies.iter().filter(|r| r.status == 201) {
        let id = r.body["reservation_id"].as_str().unwrap_or_default();
        let stored = app.get(&format!("/v1/reservations/{id}")).await;
        assert_eq!(stored.status, 200);
        for line in r.body["lines"].as_array().cloned().unwrap_or_default() {
            let allocated: i64 = line["allocations"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["quantity"].as_i64()).sum())
                .unwrap_or(0);
            assert_eq!(allocated, line["quantity"].as_i64().unwrap_or(-1), "a line held only in part: {}", r.body);
            *expected.entry(line["sku"].as_str().unwrap_or("").to_owned()).or_default() += allocated;
        }
    }
    for r in replies.iter().filter(|r| r.status == 409) {
        assert_eq!(r.error_code(), "insufficient_stock");
    }
    // Reserved is exactly what the accepted reservations hold: refused ones left nothing behind.
    for sku in ["A", "B"] {
        let (_, reserved, _, available) = figures(&app, sku).await;
        assert_eq!(reserved, expected.get(sku).copied().unwrap_or(0), "{sku}");
        assert!(available >= 0, "{sku} oversold");
    }
    // No refusal was false: stock only went down, so every refused request still cannot be met now.
    let (a_left, b_left) = (figures(&app, "A").await.3, figures(&app, "B").await.3);
    for (i, r) in replies.iter().enumerate().filter(|(_, r)| r.status == 409) {
        let could_be_met = match i % 3 {
            1 => a_left >= 2,
            _ => a_left >= 1 && b_left >= 1,
        };
        assert!(!could_be_met, "request {i} was refused though A={a_left}, B={b_left} are left: {r:?}");
    }
    assert!(a_left <= 1 || b_left == 0, "stock left that some refused request wanted: A={a_left}, B={b_left}");
    assert_ledger_consistent(&app, &["A", "B"]).await;
}

/// Holds that race on one SKU are decided together (one writer batch on SQLite, one transaction per group on the
/// others): a request refused in the middle of such a batch must leave nothing behind, not even the line that fit,
/// and must not take the requests decided with it down. Every fourth request asks for HOT and for more of SCARCE
/// than there is; the rest ask for HOT alone, of which there is plenty.
async fn a_refused_hold_among_racing_holds_leaves_nothing_and_fails_no_other(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("wh", 1).await;
    app.receive("HOT", "wh", 10_000).await;
    app.receive("SCARCE", "wh", 1).await;

    let api = app.api.clone();
    let n = CLIENTS * 4;
    let replies = race(n, move |i| {
        let api = api.clone();
        let lines = if i % 4 == 0 {
            json!([{ "sku": "HOT", "quantity": 1 }, { "sku": "SCARCE", "quantity": 2 }])
        } else {
            json!([{ "sku": "HOT", "quantity": 1 }])
        };
        async move { api.json("POST", "/v1/reservations", &json!({ "lines": lines })).await }
    })
    .await;

    assert_no_server_errors(&replies);
    for (i, r) in replies.iter().enumerate() {
        if i % 4 == 0 {
            assert_eq!((r.status, r.error_code()), (409, "insufficient_stock"), "request {i}: {r:?}");
        } else {
            assert_eq!(r.status, 201, "request {i}, HOT alone, was refused beside a refused one: {r:?}");
        }
    }
    let accepted = (n - n.div_ceil(4)) as i64;
    assert_eq!(figures(&app, "HOT").await, (10_000, accepted, 0, 10_000 - accepted), "HOT: only the accepted holds");
    assert_eq!(figures(&app, "SCARCE").await, (1, 0, 0, 1), "SCARCE untouched");
    assert_ledger_consistent(&app, &["HOT", "SCARCE"]).await;
}

async fn racing_requests_with_one_idempotency_key_apply_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("wh", 1).await;
    app.receive("ONCE", "wh", 100).await;

    let api = app.api.clone();
    let body =
        json!({ "reservation_id": "cart-race", "lines": [{ "sku": "ONCE", "quantity": 3 }], "ttl_seconds": 3600 });
    let replies = race(CLIENTS, move |_| {
        let (api, body) = (api.clone(), body.clone());
        async move { api.json("POST", "/v1/reservations", &body).await }
    })
    .await;

    assert_no_server_errors(&replies);
    let created = count(&replies, 201);
    let replayed = count(&replies, 200);
    let in_progress = replies.iter().filter(|r| r.status == 409 && r.error_code() == "idempotency_in_progress").count();
    assert_eq!(created, 1, "exactly one request did the work");
    assert_eq!(created + replayed + in_progress, CLIENTS, "{replies:?}");
    let first = replies.iter().find(|r| r.status == 201).map(|r| r.body.clone()).unwrap_or(Value::Null);
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(r.body, first, "a replay answers as the first time did");
        assert_eq!(r.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    }
    assert_eq!(figures(&app, "ONCE").await.1, 3, "held once");
    assert_eq!(app.all_movements("&sku=ONCE").await.len(), 2, "one adjustment and one hold movement");
}

async fn racing_adjustments_with_one_key_apply_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("wh", 1).await;

    let api = app.api.clone();
    let body = json!({ "changes": [{ "sku": "DELIVERY", "location": "wh", "delta": 25, "reason": "received" }] });
    let replies = race(CLIENTS, move |_| {
        let (api, body) = (api.clone(), body.clone());
        async move { api.json_with_key("POST", "/v1/adjustments", "delivery-42", &body).await }
    })
    .await;

    assert_no_server_errors(&replies);
    for r in &replies {
        assert!(r.status == 200 || (r.status == 409 && r.error_code() == "idempotency_in_progress"), "{r:?}");
    }
    assert_eq!(figures(&app, "DELIVERY").await.0, 25, "received once, however often it was sent");
    assert_eq!(app.all_movements("&sku=DELIVERY").await.len(), 1);
}

/// What one simulated client does next.
async fn random_step(api: Api, seed: u64, skus: &'static [&'static str]) -> Vec<Reply> {
    let mut rng = Rng::new(seed);
    let mut replies = Vec::new();
    let mut mine: Vec<String> = Vec::new();
    for _ in 0..12 {
        let sku = skus[rng.below(skus.len() as u64) as usize];
        let reply = match rng.below(10) {
            0 => {
                let body = json!({ "changes": [{ "sku": sku, "location": if rng.below(2) == 0 { "near" } else { "far" },
                                   "delta": 1 + rng.below(3) as i64, "reason": "received" }] });
                api.json_with_key("POST", "/v1/adjustments", &format!("adj-{seed}-{}", rng.next_u64()), &body).await
            }
            1..=4 => {
                let other = skus[rng.below(skus.len() as u64) as usize];
                let mut lines = vec![json!({ "sku": sku, "quantity": 1 + rng.below(3) })];
                if other != sku && rng.below(2) == 0 {
                    lines.push(json!({ "sku": other, "quantity": 1 }));
                }
                let r = api.json("POST", "/v1/reservations", &json!({ "lines": lines, "ttl_seconds": 3600 })).await;
                if r.status == 201 {
                    mine.push(r.body["reservation_id"].as_str().unwrap_or_default().to_owned());
                }
                r
            }
            step => {
                let Some(id) = (!mine.is_empty()).then(|| mine[rng.below(mine.len() as u64) as usize].clone()) else {
                    continue;
                };
                let action = match step {
                    5 | 6 => "commit",
                    7 => "fulfil",
                    _ => "release",
                };
                api.send("POST", &format!("/v1/reservations/{id}/{action}"), &[], None).await
            }
        };
        replies.push(reply);
    }
    replies
}

async fn a_random_concurrent_workload_keeps_the_ledger_consistent(b: Backend) {
    const SKUS: &[&str] = &["R1", "R2", "R3"];
    let (mut rng, seed) = Rng::from_env("a_random_concurrent_workload_keeps_the_ledger_consistent");
    let app = TestApp::spawn(b).await;
    app.location("near", 1).await;
    app.location("far", 2).await;
    for sku in SKUS {
        app.receive(sku, "near", 5).await;
        app.receive(sku, "far", 5).await;
    }

    let clients: Vec<_> =
        (0..CLIENTS).map(|_| tokio::spawn(random_step(app.api.clone(), rng.next_u64(), SKUS))).collect();
    let replies: Vec<Reply> = join_all(clients).await.into_iter().flat_map(|r| r.expect("client")).collect();

    assert_no_server_errors(&replies);
    for r in replies.iter().filter(|r| r.status >= 400) {
        assert!(
            matches!(r.error_code(), "insufficient_stock" | "invalid_state"),
            "seed {seed}: only stock and state refusals are expected: {r:?}"
        );
    }
    assert_ledger_consistent(&app, SKUS).await;
    // Reserved and committed are exactly what the reservations say they hold.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    let mut sold: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in app.all_movements("").await {
        if let Some(id) = m["cause"].as_str().and_then(|c| c.strip_prefix("reservation:"))
            && seen.insert(id.to_owned())
        {
            let r = app.get(&format!("/v1/reservations/{id}")).await;
            assert_eq!(r.status, 200, "seed {seed}: every movement's reservation exists");
        }
        let sku = m["sku"].as_str().unwrap_or("").to_owned();
        *held.entry(sku.clone()).or_default() += m["reserved_delta"].as_i64().unwrap_or(0);
        *sold.entry(sku).or_default() += m["committed_delta"].as_i64().unwrap_or(0);
    }
    for sku in SKUS {
        let (_, reserved, committed, _) = figures(&app, sku).await;
        assert_eq!(reserved, held.get(*sku).copied().unwrap_or(0), "seed {seed}: {sku} reserved");
        assert_eq!(committed, sold.get(*sku).copied().unwrap_or(0), "seed {seed}: {sku} committed");
    }
}

async fn lapsed_holds_free_their_units_for_racing_shoppers_and_cannot_be_committed(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.location("wh", 1).await;
    app.receive("FLASH", "wh", 8).await;
    let mut lapsing = Vec::new();
    for _ in 0..8 {
        let r = app
            .json(
                "POST",
                "/v1/reservations",
                &json!({ "lines": [{ "sku": "FLASH", "quantity": 1 }], "ttl_seconds": 60 }),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        lapsing.push(r.body["reservation_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(figures(&app, "FLASH").await.3, 0, "all eight held");
    app.advance(std::time::Duration::from_secs(61));
    // No sweeper has run: expiry shows at read time.
    assert_eq!(figures(&app, "FLASH").await.3, 8, "lapsed holds no longer count");

    let api = app.api.clone();
    let ids = lapsing.clone();
    let replies = race(CLIENTS, move |i| {
        let api = api.clone();
        let id = ids[i % ids.len()].clone();
        async move {
            if i < 8 {
                api.send("POST", &format!("/v1/reservations/{id}/commit"), &[], None).await
            } else {
                api.json(
                    "POST",
                    "/v1/reservations",
                    &json!({ "lines": [{ "sku": "FLASH", "quantity": 1 }], "ttl_seconds": 600 }),
                )
                .await
            }
        }
    })
    .await;

    assert_no_server_errors(&replies);
    for r in &replies[..8] {
        assert_eq!((r.status, r.error_code()), (410, "reservation_expired"), "{r:?}");
    }
    let new_holds = replies[8..].iter().filter(|r| r.status == 201).count();
    assert_eq!(new_holds, 8, "the eight freed units went to new shoppers, once each");
    let (on_hand, reserved, committed, available) = figures(&app, "FLASH").await;
    assert_eq!((on_hand, reserved, committed, available), (8, 8, 0, 0));
    for id in &lapsing {
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.body["status"], "expired");
    }
    assert_ledger_consistent(&app, &["FLASH"]).await;
}
