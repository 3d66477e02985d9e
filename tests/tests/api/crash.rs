//! Invariant 4, nothing acknowledged is lost: the suite is killed (SIGKILL, no drain) in the middle of a load and
//! restarted on the same database; every hold it acknowledged is still there, and the ledger still adds up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;

use serde_json::json;
use stockroom_e2e::{Backend, ChildApp, TestDb, replayed_levels};
use tokio::sync::Mutex;

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");
/// Clients loading the server when it is killed.
const CLIENTS: usize = 32;
/// Reads of the acknowledged holds at once after the restart (each is a strong read, a third of a second on the
/// Spanner emulator).
const READERS: usize = 16;
/// Acknowledged holds to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 300;

on_every_store!(acknowledged_holds_survive_a_kill_without_warning);

async fn acknowledged_holds_survive_a_kill_without_warning(b: Backend) {
    let db = TestDb::new(b).await;
    let app = ChildApp::spawn(SERVER, &db.url).await;
    app.location("wh", 1).await;
    app.receive("CRASH", "wh", 1_000_000).await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (api, acked, sent, acks, stop) = (app.api.clone(), acked.clone(), sent.clone(), acks.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("crash-{c}-{n}");
                n += 1;
                let body =
                    json!({ "reservation_id": id, "lines": [{ "sku": "CRASH", "quantity": 1 }], "ttl_seconds": 86400 });
                sent.lock().await.push(body.clone());
                match api.try_json("POST", "/v1/reservations", &body).await {
                    Ok(r) if r.status == 201 => {
                        acked.lock().await.insert(id);
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => assert!(r.status >= 500, "before the kill only success or a server error: {r:?}"),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Up to a minute: the Spanner emulator applies one transaction at a time, so it gets there slowest.
    for _ in 0..6_000 {
        if acks.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(acks.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL, "the load got going before the kill");
    app.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    // Attempts cut off by the kill must leave their keys free: the retries below come at once, with the default
    // lease, and none may be told `idempotency_in_progress`.
    let app = ChildApp::spawn(SERVER, &db.url).await;
    let acked = acked.lock().await.clone();
    let api = &app.api;
    let reads = futures::stream::iter(&acked)
        .map(|id| async move { (id, api.get(&format!("/v1/reservations/{id}")).await) })
        .buffer_unordered(READERS);
    for (id, r) in reads.collect::<Vec<_>>().await {
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("held")), "acknowledged {id} was lost");
    }
    // Holds the server finished but could not acknowledge may exist too; nothing else does, and the
    // figures agree with the ledger.
    let stock = app.stock("CRASH").await;
    let reserved = stock["total"]["reserved"].as_i64().unwrap_or(-1);
    let holds = app.all_movements("&sku=CRASH").await.iter().filter(|m| m["kind"] == "hold").count() as i64;
    assert_eq!(reserved, holds, "every hold movement is one unit reserved");
    assert!(reserved >= acked.len() as i64, "reserved {reserved} < acknowledged {}", acked.len());
    let replayed = replayed_levels(&app).await;
    assert_eq!(replayed.get(&("CRASH".into(), "wh".into())).map(|l| l.1), Some(reserved));

    // Sending every request again, right away, applies each at most once: the ones that took answer as before.
    let sent = sent.lock().await.clone();
    for body in &sent {
        let r = app.json("POST", "/v1/reservations", body).await;
        let id = body["reservation_id"].as_str().unwrap_or_default();
        assert!(r.status == 201 || r.status == 200, "{id}: {r:?}");
        if acked.contains(id) {
            assert_eq!(r.status, 200, "{id} was acknowledged, so its retry is a replay");
        }
    }
    let after = app.stock("CRASH").await["total"]["reserved"].as_i64().unwrap_or(-1);
    assert_eq!(after, sent.len() as i64, "each sent reservation held exactly once");
    app.kill();
}
