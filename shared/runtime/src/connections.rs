//! The accept loop: what a connection may cost before it sends a request, and how many may be open at once.
//!
//! `axum::serve` keeps every connection for as long as the client likes: one that connects and says nothing, or
//! sends its headers a byte at a time, holds a socket (and a file descriptor) forever. Here, on hyper-util's
//! auto (HTTP/1.1 and h2c) connection builder:
//! - a connection must send its first byte within the header timeout, and HTTP/1.1 request headers must be
//!   complete within it (hyper's `header_read_timeout`, which also bounds an idle keep-alive connection);
//! - a connection on which no byte moves either way for the idle timeout is closed (HTTP/2, and a peer that
//!   stops reading its answer);
//! - at most `connections_max` are open; past that the loop stops accepting and the kernel's backlog queues
//!   new connects until one closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::Service;

/// Bounds on a connection, apart from any one request's.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From connect to the first byte, and for an HTTP/1.1 request's headers (also an idle keep-alive's life).
    pub header_timeout: Duration,
    /// No byte read or written for this long closes the connection. Longer than the request timeout, so that a
    /// slow handler is answered by it (503) rather than cut off.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub connections_max: usize,
}

/// Accepts connections on `listener` and serves `app` on each until `stop` completes; then stops accepting,
/// asks every connection to finish its requests and close, and waits up to `drain` for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<bool> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Pings find a dead h2 peer; the idle timeout closes a live one that sends nothing.
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(20)));
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let mut full_since: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if full_since.is_none() {
                    tracing::warn!(connections_max = limits.connections_max, "connection limit reached: not accepting");
                    full_since = Some(Instant::now());
                }
                tokio::select! {
                    permit = open.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut stop => break,
                }
            }
        };
        if let Some(since) = full_since.take() {
            tracing::info!(waited_ms = since.elapsed().as_millis() as u64, "accepting connections again");
        }
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait for some to come back rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Quiet::new(stream, limits.header_timeout, limits.idle_timeout));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| app.clone().call(request));
        let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        metrics::gauge!("http_connections_open").increment(1.0);
        tokio::spawn(async move {
            // Errors here are the peer's doing (reset, timed out, malformed): nothing to answer and no one to tell.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(true),
        () = tokio::time::sleep(drain) => Ok(false),
    }
}

/// Accept errors that concern only the connection being accepted (as hyper's and axum's loops treat them).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// A connection that fails with `TimedOut` once nothing has moved on it for a while: first `first` after
/// connect, then `idle` after each byte read or written. It fails only while someone waits on it: a handler
/// that is working, with no read pending, is the request timeout's business. One timer serves reads and writes,
/// so both are polled from one task, as hyper's connections are.
pub struct Quiet<T> {
    io: T,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> Quiet<T> {
    pub fn new(io: T, first: Duration, idle: Duration) -> Self {
        let deadline = Instant::now() + first;
        Self { io, idle, deadline, timer: Box::pin(tokio::time::sleep_until(deadline)) }
    }

    fn moved(&mut self) {
        self.deadline = Instant::now() + self.idle;
    }

    /// A write's result: bytes written count as movement, and a write that waits is bounded by the deadline (a peer
    /// that stops reading its answer holds the socket as surely as one that stops writing).
    fn wrote(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_quiet(cx).map(Err),
        }
    }

    /// Ready with an error once the deadline has passed; otherwise registers for a wake at the deadline.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.deadline() != self.deadline {
                self.timer.as_mut().reset(self.deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= self.deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "nothing moved on the connection"));
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Quiet<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_quiet(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Quiet<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_at_first_and_a_talking_one_only_once_it_stops() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut quiet = Quiet::new(ours, Duration::from_secs(1), Duration::from_secs(5));
        let mut buf = [0u8; 8];

        // Something arrives before the first deadline: the idle deadline takes over.
        theirs.write_all(b"hi").await.expect("write");
        assert_eq!(quiet.read(&mut buf).await.expect("read"), 2);
        let started = Instant::now();
        let err = quiet.read(&mut buf).await.expect_err("nothing more comes");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // A connection that says nothing at all lasts only the first deadline.
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut silent = Quiet::new(ours, Duration::from_secs(1), Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(silent.read(&mut buf).await.expect_err("silent").kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn writing_counts_as_activity_and_a_peer_that_stops_reading_times_out() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let (mut rx, mut tx) = tokio::io::split(Quiet::new(ours, Duration::from_secs(5), Duration::from_secs(5)));
        // We answer a byte every 3 s for 12 s while our read waits (a streamed answer, the peer silent): the read
        // outlives the 5 s idle deadline, and gets the byte the peer finally sends at 13 s.
        let reader = async {
            let mut buf = [0u8; 8];
            rx.read(&mut buf).await
        };
        let writer = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                tx.write_all(b"x").await.expect("write");
            }
        };
        let peer = async {
            tokio::time::sleep(Duration::from_secs(13)).await;
            theirs.write_all(b"y").await.expect("peer write");
        };
        let started = Instant::now();
        let (read, (), ()) = tokio::join!(reader, writer, peer);
        assert_eq!(read.expect("the read outlived the idle deadline"), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(13));

        // The peer never reads: our writes fill the pipe, then time out 5 s after the last byte went.
        let started = Instant::now();
        let err = tx.write_all(&[0u8; 64]).await.expect_err("the pipe fills");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(theirs);
    }
}
