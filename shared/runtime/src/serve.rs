//! Serving: a listener handed in, the edges every function shares, and a graceful stop.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::connections::ConnectionLimits;
use crate::http::{ApiError, Fault};

/// Bounds on what one request may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub request_timeout_ms: u64,
    /// After SIGTERM, how long in-flight requests get before the process stops anyway.
    pub drain_seconds: u64,
    /// What a connection may cost apart from its requests.
    pub connections: ConnectionLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes_max: crate::extract::BODY_BYTES_MAX,
            request_timeout_ms: 30_000,
            drain_seconds: 8,
            connections: ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                connections_max: 10_000,
            },
        }
    }
}

/// Adds what every function's router needs at its edge: trace context and access log, metrics, a timeout,
/// a body bound, and JSON answers for unknown routes and methods.
pub fn with_edges(router: Router, limits: &Limits) -> Router {
    let timeout = Duration::from_millis(limits.request_timeout_ms);
    // Install the recorder now, not at the first scrape, so that requests before it are counted.
    let _ = crate::metrics::handle();
    router
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Fault::MethodNotAllowed, "method_not_allowed", "this route does not take that method")
        })
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn(trace_context))
}

/// A request that outlives its budget is answered 503 so the sender retries. Store writes run in their own
/// task (or the SQLite writer), so cutting the request short never leaves a write half done.
async fn enforce_timeout(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// W3C `traceparent` (`00-<trace>-<span>-<flags>`), else Google's `X-Cloud-Trace-Context`
/// (`<trace>/<decimal span>;o=1`), else a fresh trace id so that one request's lines still group.
pub fn trace_ids(headers: &HeaderMap) -> (String, Option<String>, bool) {
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if let [_, trace, span, flags] = parts.as_slice()
            && trace.len() == 32
            && span.len() == 16
            && trace.bytes().all(|b| b.is_ascii_hexdigit())
            && span.bytes().all(|b| b.is_ascii_hexdigit())
            && *trace != "00000000000000000000000000000000"
        {
            let sampled = u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1);
            return (trace.to_ascii_lowercase(), Some(span.to_ascii_lowercase()), sampled);
        }
    }
    if let Some(xc) = headers.get("x-cloud-trace-context").and_then(|v| v.to_str().ok()) {
        let (ids, options) = xc.split_once(';').unwrap_or((xc, ""));
        let (trace, span) = ids.split_once('/').unwrap_or((ids, ""));
        if trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) {
            let span = span.parse::<u64>().ok().map(|s| format!("{s:016x}"));
            return (trace.to_ascii_lowercase(), span, options.contains("o=1"));
        }
    }
    (uuid::Uuid::now_v7().simple().to_string(), None, false)
}

async fn trace_context(request: Request, next: Next) -> Response {
    let (trace_id, span_id, sampled) = trace_ids(request.headers());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        span_id = span_id.as_deref().unwrap_or(""),
        trace_sampled = sampled,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            http_request.requestMethod = %method,
            http_request.requestUrl = %uri,
            http_request.status = status,
            http_request.latency = format!("{:.6}s", started.elapsed().as_secs_f64()),
            "request"
        );
    });
    response
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for up to `limits.drain_seconds`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: &Limits,
) -> std::io::Result<()> {
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
    };
    let drain = Duration::from_secs(limits.drain_seconds);
    if !crate::connections::serve(listener, app, &limits.connections, stop, drain).await? {
        tracing::warn!("drain deadline passed; stopping with requests still open");
    }
    Ok(())
}

/// Completes on SIGTERM (Cloud Run's stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn traceparent_gives_trace_and_span() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"));
        let (trace, span, sampled) = trace_ids(&h);
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.as_deref(), Some("00f067aa0ba902b7"));
        assert!(sampled);
    }

    #[test]
    fn cloud_trace_context_span_is_decimal_turned_hex() {
        let mut h = HeaderMap::new();
        h.insert("x-cloud-trace-context", HeaderValue::from_static("105445aa7843bc8bf206b12000100000/1;o=1"));
        let (trace, span, sampled) = trace_ids(&h);
        assert_eq!(trace, "105445aa7843bc8bf206b12000100000");
        assert_eq!(span.as_deref(), Some("0000000000000001"));
        assert!(sampled);
    }

    #[test]
    fn a_malformed_traceparent_falls_back_to_a_fresh_trace() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"));
        let (trace, span, _) = trace_ids(&h);
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, "zz");
        assert!(span.is_none());
    }
}
