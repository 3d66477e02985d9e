//! What a connection may cost before it sends a request: a client that connects and says nothing, sends its
//! headers a byte at a time, keeps an idle connection, or opens h2c and goes quiet is closed, and past the
//! connection limit new connects wait until one closes. Over raw TCP, since an HTTP client would behave.

use std::time::Duration;

use stockroom_e2e::{Backend, TestApp, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds far below the defaults, so that the test sees them act within seconds.
async fn app(header_ms: u64, idle_ms: u64, connections_max: usize) -> TestApp {
    TestApp::spawn_configured(TestDb::new(Backend::Sqlite).await, |s| {
        s.header_timeout_ms = header_ms;
        s.idle_timeout_ms = idle_ms;
        s.connections_max = connections_max;
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection, giving up after `within`; what was read, if it closed.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok().map(|()| seen)
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: stockroom\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_a_slow_and_an_idle_connection_are_each_closed_and_the_server_goes_on() {
    let app = app(400, 1_500, 10_000).await;

    // Connects and says nothing: closed after the header timeout, with nothing said to it.
    let mut silent = connect(&app).await;
    let said = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(said.as_deref(), Some(&b""[..]), "a silent connection is closed, unanswered");

    // Sends a request line and then a header every 100 ms, never finishing: cut off long before 10 s of it.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: stockroom\r\n").await.expect("request line");
    let mut cut_after = None;
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
            cut_after = Some(i);
            break;
        }
    }
    assert!(cut_after.is_some(), "a client trickling headers for 10 s was never cut off");

    // A finished request on a keep-alive connection is answered; the connection, left idle, is then closed.
    let mut idle = connect(&app).await;
    idle.write_all(GET_HEALTHZ).await.expect("request");
    let said = closed_within(&mut idle, Duration::from_secs(10)).await.expect("an idle keep-alive is closed");
    assert!(said.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&said));

    // h2c with prior knowledge: the preface and our settings, then silence. The server's settings come back,
    // and once nothing moves for the idle timeout the connection is closed.
    let mut h2 = connect(&app).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    h2.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.expect("empty SETTINGS frame");
    let said = closed_within(&mut h2, Duration::from_secs(10)).await.expect("an idle h2 connection is closed");
    assert!(said.len() >= 9 && said[3] == 0x4, "the server's SETTINGS frame first: {said:?}");

    // None of it stopped the server.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_connection_limit_a_connect_waits_until_one_closes() {
    let app = app(2_000, 10_000, 4).await;
    // The readiness probe's pooled connection may still be open: wait until it is closed (header timeout), so that
    // exactly the four below hold the limit.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fifth connects (the kernel's backlog takes it) and asks, but is not read while the four are open.
    let mut fifth = connect(&app).await;
    fifth.write_all(GET_HEALTHZ).await.expect("request");
    let mut first = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(1_000), fifth.read_exact(&mut first)).await;
    assert!(early.is_err(), "answered while the limit was reached: {:?}", String::from_utf8_lossy(&first));
    // The four say nothing, so the header timeout closes them; then the fifth is accepted and answered.
    tokio::time::timeout(Duration::from_secs(10), fifth.read_exact(&mut first))
        .await
        .expect("answered once the silent connections were closed")
        .expect("read");
    assert_eq!(&first, b"HTTP/1.1 200");
    drop(holders);
}
