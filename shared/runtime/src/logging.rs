//! Logs as Cloud Logging reads them: one JSON object a line with `severity`, `message`, `time`, the trace as
//! `logging.googleapis.com/trace` and `…/spanId`, and `httpRequest` for access lines.
//!
//! Written here rather than taken from `tracing-stackdriver`: that crate writes the trace fields only through
//! its `opentelemetry` feature, which is pinned to an OpenTelemetry release this workspace does not use
//! (see ../shared/STACK.md). The trace ids come from the request span's `trace_id` / `span_id` fields,
//! which `serve::trace_context` fills from `traceparent` or `X-Cloud-Trace-Context`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the JSON logger for the process. `project` turns trace ids into Cloud Trace resource names.
/// Safe to call more than once (tests do); only the first call installs.
pub fn init(project: Option<String>) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(TraceIdsLayer)
        .with(tracing_subscriber::fmt::layer().event_format(CloudLogging { project }))
        .try_init();
}

#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: Option<String>,
    sampled: bool,
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// Remembers the trace ids of spans that carry them, for the formatter.
struct TraceIdsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceIdsLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(Value::String(trace_id)) = fields.0.remove("trace_id") else {
            return;
        };
        if trace_id.is_empty() {
            return;
        }
        let span_id = match fields.0.remove("span_id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        let sampled = matches!(fields.0.remove("trace_sampled"), Some(Value::Bool(true)));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(TraceIds { trace_id, span_id, sampled });
        }
    }
}

struct CloudLogging {
    project: Option<String>,
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), severity(event.metadata().level()).into());
        line.insert("time".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
        line.insert("message".into(), fields.0.remove("message").unwrap_or(Value::String(String::new())));
        line.insert("target".into(), event.metadata().target().into());
        let mut http = Map::new();
        for (k, v) in fields.0 {
            match k.strip_prefix("http_request.") {
                Some(name) => {
                    http.insert(name.to_owned(), v);
                }
                None => {
                    line.insert(k, v);
                }
            }
        }
        if !http.is_empty() {
            line.insert("httpRequest".into(), Value::Object(http));
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(ids) = span.extensions().get::<TraceIds>() {
                    let trace = match &self.project {
                        Some(p) => format!("projects/{p}/traces/{}", ids.trace_id),
                        None => ids.trace_id.clone(),
                    };
                    line.insert("logging.googleapis.com/trace".into(), trace.into());
                    if let Some(span_id) = &ids.span_id {
                        line.insert("logging.googleapis.com/spanId".into(), span_id.clone().into());
                    }
                    line.insert("logging.googleapis.com/trace_sampled".into(), ids.sampled.into());
                }
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}
