//! The process as Cloud Run sees it: `PORT` honoured, JSON log lines carrying the caller's trace, and SIGTERM
//! draining in-flight requests before a clean exit.

use std::time::Duration;

use serde_json::{Value, json};
use stockroom_e2e::{Backend, ChildApp, TestDb, via};

const SERVER: &str = env!("CARGO_BIN_EXE_stockroom-e2e-server");

on_every_store!(the_process_honours_port_logs_traces_and_drains_on_sigterm);

async fn the_process_honours_port_logs_traces_and_drains_on_sigterm(b: Backend) {
    let db = TestDb::new(b).await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("addr").port()
    };
    let mut app = ChildApp::spawn_with(SERVER, &db.url, &[("PORT", &port.to_string())]).await;
    assert!(app.base.ends_with(&format!(":{port}")), "listening on {} rather than PORT={port}", app.base);

    // A request with a W3C trace context shows up in a Cloud Logging line with that trace and span.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r =
        app.send("GET", "/v1/locations", &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))], None).await;
    assert_eq!(r.status, 200);
    app.location("wh", 1).await;
    app.receive("DRAIN", "wh", 1_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines: Vec<Value> = app
        .logs
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["severity"].is_string() && l["time"].is_string()),
        "JSON log lines"
    );
    let traced = lines
        .iter()
        .find(|l| l["logging.googleapis.com/trace"] == trace)
        .unwrap_or_else(|| panic!("no log line carries trace {trace}: {lines:?}"));
    assert_eq!(traced["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(traced["logging.googleapis.com/trace_sampled"], true);
    assert_eq!(traced["httpRequest"]["requestUrl"], "/v1/locations");

    // Requests in flight when SIGTERM arrives are answered; then the process exits by itself, cleanly.
    let in_flight: Vec<_> = (0..32)
        .map(|_| {
            let api = app.api.clone();
            tokio::spawn(async move {
                api.try_json("POST", "/v1/reservations", &json!({ "lines": [{ "sku": "DRAIN", "quantity": 1 }] })).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let term = std::process::Command::new("kill").args(["-TERM", &app.pid().to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let mut answered = 0;
    for h in in_flight {
        // A request that had not reached the server before it stopped listening is refused at connect: fine.
        if let Ok(r) = h.await.expect("task") {
            assert_eq!(r.status, 201, "an in-flight request was cut off: {r:?}");
            answered += 1;
        }
    }
    assert!(answered > 0, "the load reached the server before it stopped");
    let status = tokio::task::block_in_place(|| app.wait_exit(Duration::from_secs(15)));
    assert!(status.is_some_and(|s| s.success()), "exit after SIGTERM: {status:?}");
    assert!(lines_after(&app).iter().any(|l| l.contains("shutting down")), "the drain is logged");
    // Whatever was answered is in the ledger after a restart.
    let app = ChildApp::spawn(SERVER, &db.url).await;
    assert_eq!(app.stock("DRAIN").await["total"]["reserved"], answered);
}

fn lines_after(app: &ChildApp) -> Vec<String> {
    app.logs.lock().map(|l| l.clone()).unwrap_or_default()
}

/// A port another process holds is said in words, not as `Os { code: 98 … }`, and the process exits at once.
#[test]
fn a_busy_port_is_said_plainly_and_the_process_exits() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let port = holder.local_addr().expect("addr").port();
    let dir = std::env::temp_dir().join(format!("stockroom-busy-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut child = std::process::Command::new(SERVER)
        .args(["serve"])
        .env("PORT", port.to_string())
        .env("STOCKROOM_BIND", "127.0.0.1")
        .env("STOCKROOM_DATABASE_URL", format!("sqlite://{}", dir.join("db").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let exited = stockroom_e2e::wait_exit(&mut child, Duration::from_secs(30));
    let _ = child.kill();
    let status = exited.expect("the process gave up on a busy port instead of running");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "{status}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}: another process already listens there")),
        "{stderr}"
    );
    assert!(!stderr.contains("Os {"), "{stderr}");
    drop(holder);
}

/// Issue 9, defect 5: a store down at start-up once ended the process with `Error: Transient(PoolTimedOut)`.
/// It is waited for as long as `STOCKROOM_STORE_WAIT_MS` says, then the process exits saying what it waited for.
#[test]
fn a_store_still_down_after_the_start_up_wait_is_said_plainly_and_the_process_exits() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(SERVER)
        .args(["serve"])
        .env("PORT", "0")
        .env("STOCKROOM_BIND", "127.0.0.1")
        .env("STOCKROOM_DATABASE_URL", format!("postgres://postgres@127.0.0.1:{port}/nowhere"))
        .env("STOCKROOM_STORE_WAIT_MS", "1500")
        // Each attempt gives up after half a second, so the wait holds several.
        .env("STOCKROOM_DB_ACQUIRE_TIMEOUT_MS", "500")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let exited = stockroom_e2e::wait_exit(&mut child, Duration::from_secs(30));
    let _ = child.kill();
    let took = started.elapsed();
    let status = exited.expect("the process gave up on the store within 30 s");
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    };
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    assert!(!status.success(), "{status}");
    assert!(took >= Duration::from_millis(1500), "it waited {took:?}, less than STOCKROOM_STORE_WAIT_MS");
    assert!(stderr.contains("the store (postgres) is still not reachable after"), "{stderr}");
    assert!(!stderr.contains("Transient(") && !stderr.contains("PoolTimedOut"), "{stderr}");
    // It said it was waiting while it waited.
    assert!(stdout.contains("the store is not reachable yet"), "{stdout}");
}

/// The other half: a store that comes up during the wait (it starts beside us) is used, and the suite serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_comes_up_during_the_start_up_wait_is_used() {
    let db = TestDb::new(Backend::Postgres).await;
    // The server is reached through a port that only starts forwarding to PostgreSQL two seconds in.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let (url, server) = via(&db.url, &format!("127.0.0.1:{port}"));
    let forwarder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the reserved port");
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&server).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    let app = ChildApp::spawn_with(
        SERVER,
        &url,
        &[("STOCKROOM_STORE_WAIT_MS", "30000"), ("STOCKROOM_DB_ACQUIRE_TIMEOUT_MS", "500")],
    )
    .await;
    let waited =
        app.logs.lock().map(|l| l.iter().any(|l| l.contains("the store is not reachable yet"))).unwrap_or(false);
    assert!(waited, "the store was down when the process started, and it said it waited");
    app.location("wh", 1).await;
    app.receive("LATE", "wh", 3).await;
    assert_eq!(app.stock("LATE").await["total"]["on_hand"], 3);
    drop(app);
    forwarder.abort();
}
