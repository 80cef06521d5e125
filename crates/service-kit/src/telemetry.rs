//! Telemetry wired once per process: JSON log lines that carry `trace_id`/`span_id`, and, when an
//! OTLP endpoint is given, spans and log records exported over OTLP/HTTP with W3C `traceparent`
//! propagation. The returned guard flushes buffered spans and log records on drop.
//!
//! Without an endpoint no OpenTelemetry layer is installed: building an OTel span per request
//! that nobody exports cost more than the proxying itself. Requests then carry a plain
//! [`TraceContext`] (the caller's trace id, a fresh span id) in a task-local, which outgoing
//! `traceparent` headers and log lines read.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, OtelData};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{FilterExt as _, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and shuts the tracer and the logger down when dropped (at the end of `main`).
#[must_use = "dropping the guard stops trace and log export"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
}

impl TelemetryGuard {
    /// `true` when spans and log records are exported (an OTLP endpoint was given).
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").field("exporting", &self.exporting()).finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // The tracer first, so that a failure to flush spans can still leave as a log record.
        if let Some(tracer) = self.tracer.take()
            && let Err(err) = tracer.shutdown()
        {
            tracing::warn!(error = %err, "trace exporter did not shut down cleanly");
        }
        if let Some(logger) = self.logger.take()
            && let Err(err) = logger.shutdown()
        {
            tracing::warn!(error = %err, "log exporter did not shut down cleanly");
        }
    }
}

/// Whether the installed subscriber exports spans (an OTLP endpoint was given). Requests are
/// then traced through OpenTelemetry spans; otherwise through a [`TraceContext`] alone.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// `true` when spans are exported: the request span and its OpenTelemetry context are worth
/// building.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber for `service`. `otlp_endpoint` is the OTLP/HTTP base URL
/// (the value of `OTEL_EXPORTER_OTLP_ENDPOINT`, read by the binary); `filter` is an
/// `EnvFilter` directive such as `info,sqlx=warn`.
pub fn init(service: &str, otlp_endpoint: Option<&str>, filter: &str) -> anyhow::Result<TelemetryGuard> {
    let (dispatch, guard) = build(service, otlp_endpoint, filter, std::io::stdout)?;
    if guard.exporting() {
        global::set_text_map_propagator(TraceContextPropagator::new());
    }
    match tracing::dispatcher::set_global_default(dispatch) {
        Ok(()) => EXPORTING.store(guard.exporting(), Ordering::Relaxed),
        // Several services share one process in integration tests; the first one wins.
        Err(_) => tracing::debug!(service, "global subscriber already installed"),
    }
    Ok(guard)
}

/// The subscriber [`init`] installs, not installed, with its JSON lines written to `writer`:
/// tests run it with `tracing::dispatcher::with_default`. With an endpoint, spans go to
/// `{endpoint}/v1/traces` and events, under the same `filter`, to `{endpoint}/v1/logs`, both
/// with the resource `service.name` = `service`.
pub fn build<W>(
    service: &str,
    otlp_endpoint: Option<&str>,
    filter: &str,
    writer: W,
) -> anyhow::Result<(Dispatch, TelemetryGuard)>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = json_layer(service, writer).with_filter(level_filter(filter)?);
    let Some(endpoint) = otlp_endpoint.filter(|e| !e.is_empty()).map(|e| e.trim_end_matches('/')) else {
        let guard = TelemetryGuard { tracer: None, logger: None };
        return Ok((Dispatch::new(tracing_subscriber::registry().with(logs)), guard));
    };
    let resource = Resource::builder().with_service_name(service.to_owned()).build();
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let log_exporter =
        opentelemetry_otlp::LogExporter::builder().with_http().with_endpoint(format!("{endpoint}/v1/logs")).build()?;
    let tracer =
        SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(span_exporter).build();
    let logger = SdkLoggerProvider::builder().with_resource(resource).with_batch_exporter(log_exporter).build();
    // The exporter's own events would be exported by the exporter, each export logging the next.
    let export_filter = level_filter(filter)?.and(exporter_targets_off());
    let subscriber = tracing_subscriber::registry()
        .with(logs)
        .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer(service.to_owned())))
        .with(OpenTelemetryTracingBridge::new(&logger).with_filter(export_filter));
    Ok((Dispatch::new(subscriber), TelemetryGuard { tracer: Some(tracer), logger: Some(logger) }))
}

fn level_filter(filter: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid log filter `{filter}`: {e}"))
}

/// Every target but those of the crates that export. Targets match by prefix: `opentelemetry`
/// covers `opentelemetry_sdk` and `opentelemetry-otlp`, `hyper` covers `hyper_util`, and `tower`
/// covers `tower_http` too (its `trace` feature, the one that logs, is off).
fn exporter_targets_off() -> Targets {
    ["opentelemetry", "reqwest", "hyper", "h2", "tower"]
        .into_iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |targets, target| {
            targets.with_target(target, LevelFilter::OFF)
        })
}

/// The JSON log layer alone, writing to `writer`; tests use it to read what was logged.
pub fn json_layer<S, W>(service: &str, writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(NoSpanFields)
        .event_format(JsonLines { service: service.to_owned() })
        .with_writer(writer)
}

/// Span fields are not part of a log line (only the span's name and trace ids are), so the fmt
/// layer need not render them into a string for every span it sees.
struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'w>, _fields: R) -> fmt::Result {
        Ok(())
    }
}

/// Reads a W3C trace context from incoming headers.
pub fn extract_context(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the trace context of the request being served into outgoing headers: the current
/// span's when spans are exported, else the request's [`TraceContext`]. Outside a request,
/// nothing is written.
pub fn inject_current(headers: &mut http::HeaderMap) {
    if exporting() {
        let cx = tracing::Span::current().context();
        global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
    } else if let Some(trace) = TraceContext::current() {
        headers.insert(TRACEPARENT, trace.traceparent());
    }
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

tokio::task_local! {
    static REQUEST_TRACE: TraceContext;
}

/// The W3C trace context of one request as this service continues it: the caller's trace id
/// (or a new one) and this service's own span id, which becomes the parent of calls made
/// on the request's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// W3C trace flags; only the `sampled` bit is kept.
    pub flags: u8,
}

impl TraceContext {
    /// Continues the trace of an incoming `traceparent` with a fresh span id, or starts a new
    /// sampled trace when there is none or it is malformed.
    pub fn continue_from(headers: &http::HeaderMap) -> Self {
        Self::continue_from_value(headers.get(TRACEPARENT).map(http::HeaderValue::as_bytes))
    }

    /// [`TraceContext::continue_from`] given the `traceparent` field's value, if any.
    pub fn continue_from_value(traceparent: Option<&[u8]>) -> Self {
        let parent = traceparent.and_then(parse_traceparent);
        let (trace_id, flags) = parent.unwrap_or_else(|| (fastrand::u128(1..), 1));
        Self { trace_id, span_id: fastrand::u64(1..), flags }
    }

    /// The context of the request the calling task serves, if any.
    pub fn current() -> Option<Self> {
        REQUEST_TRACE.try_with(|trace| *trace).ok()
    }

    /// Runs `fut` as the request this context belongs to: [`TraceContext::current`], outgoing
    /// `traceparent` headers and log lines inside it see this context.
    pub fn scope<F: Future>(self, fut: F) -> tokio::task::futures::TaskLocalFuture<TraceContext, F> {
        REQUEST_TRACE.scope(self, fut)
    }

    /// Runs `f` inside this context (for a log line outside the request's future).
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        REQUEST_TRACE.sync_scope(self, f)
    }

    /// `00-<trace id>-<span id>-<flags>`, the header that makes this span the callee's parent.
    pub fn traceparent(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.traceparent_bytes()).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// [`TraceContext::traceparent`] as bytes, for writers that encode header fields
    /// themselves (no allocation).
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        write_hex(&mut buf[3..35], &self.trace_id.to_be_bytes());
        buf[35] = b'-';
        write_hex(&mut buf[36..52], &self.span_id.to_be_bytes());
        buf[52] = b'-';
        write_hex(&mut buf[53..55], &[self.flags]);
        buf
    }

    fn trace_id_hex(&self) -> String {
        let mut buf = [0u8; 32];
        write_hex(&mut buf, &self.trace_id.to_be_bytes());
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn span_id_hex(&self) -> String {
        let mut buf = [0u8; 16];
        write_hex(&mut buf, &self.span_id.to_be_bytes());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Trace id and sampled flag of a valid W3C `traceparent` (version-format 00, or a later
/// version read as 00 as the spec asks); `None` when malformed or all-zero.
fn parse_traceparent(value: &[u8]) -> Option<(u128, u8)> {
    let value = value.trim_ascii();
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = parse_hex(&value[..2])?;
    let longer_ok = version != 0 && value.get(55).is_none_or(|b| *b == b'-');
    if version == 0xff || (value.len() != 55 && !longer_ok) {
        return None;
    }
    let trace_id = u128::from(parse_hex(&value[3..19])?) << 64 | u128::from(parse_hex(&value[19..35])?);
    let parent_id = parse_hex(&value[36..52])?;
    let flags = parse_hex(&value[53..55])?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, u8::try_from(flags & 1).unwrap_or(0)))
}

/// Value of each lowercase hex digit; 0xff for every other byte.
const HEX_DIGIT: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Up to 16 lowercase hex digits, as W3C trace context requires. Every request of a traced
/// call chain parses 52 of them, so this is a table lookup per digit without a branch.
fn parse_hex(digits: &[u8]) -> Option<u64> {
    debug_assert!(digits.len() <= 16);
    let mut value = 0u64;
    let mut invalid = 0u8;
    for digit in digits {
        let nibble = HEX_DIGIT[usize::from(*digit)];
        invalid |= nibble;
        value = value << 4 | u64::from(nibble & 0x0f);
    }
    (invalid & 0xf0 == 0).then_some(value)
}

/// Name of the server span of a request (also the `span` of a request's log lines when no
/// span is built).
pub const REQUEST_SPAN: &str = "http.request";

/// One JSON object per line: time, level, service, target, message and fields, plus the
/// trace and span ids of the innermost span that has them, else of the request served.
struct JsonLines {
    service: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("service".into(), self.service.clone().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut JsonVisitor(&mut line));
        let mut traced = false;
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            for scope in span.scope() {
                let ext = scope.extensions();
                if let Some(data) = ext.get::<OtelData>()
                    && let (Some(trace_id), Some(span_id)) = (data.trace_id(), data.span_id())
                {
                    line.insert("trace_id".into(), trace_id.to_string().into());
                    line.insert("span_id".into(), span_id.to_string().into());
                    traced = true;
                    break;
                }
            }
        }
        if !traced && let Some(trace) = TraceContext::current() {
            line.entry("span").or_insert_with(|| REQUEST_SPAN.into());
            line.insert("trace_id".into(), trace.trace_id_hex().into());
            line.insert("span_id".into(), trace.span_id_hex().into());
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_are_json_with_trace_and_span_ids() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(json_layer("shop", move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http.request");
            let _entered = span.enter();
            tracing::info!(order_id = 42, "order created");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "order created");
        assert_eq!(line["order_id"], 42);
        assert_eq!(line["service"], "shop");
        assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn log_lines_inside_a_request_carry_its_trace_ids_without_an_exporter() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer("gateway", move || writer.clone()));
        let trace = TraceContext { trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, span_id: 0xb7, flags: 1 };
        tracing::subscriber::with_default(subscriber, || {
            trace.in_scope(|| tracing::warn!("upstream request failed"));
            tracing::warn!("outside any request");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00000000000000b7");
        assert_eq!(lines[0]["span"], REQUEST_SPAN);
        assert!(lines[1].get("trace_id").is_none(), "{}", lines[1]);
    }

    fn headers_with(traceparent: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, http::HeaderValue::from_str(traceparent).unwrap());
        headers
    }

    #[test]
    fn a_request_continues_the_callers_trace_under_a_span_of_its_own() {
        let trace =
            TraceContext::continue_from(&headers_with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        let header = trace.traceparent();
        let parts: Vec<&str> = header.to_str().unwrap().split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "00f067aa0ba902b7");
        assert_eq!(parts[3], "00", "an unsampled caller stays unsampled");
        // A later version is read as version 00; extra fields after a dash are ignored.
        let later =
            TraceContext::continue_from(&headers_with("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
        assert_eq!(later.trace_id, trace.trace_id);
        assert_eq!(later.flags, 1);
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_sampled_trace() {
        let caller = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let trace = TraceContext::continue_from(&headers_with(bad));
            assert_ne!(trace.trace_id, caller, "{bad}");
            assert_eq!(trace.flags, 1, "{bad}");
        }
        let fresh = TraceContext::continue_from(&http::HeaderMap::new());
        assert_ne!(fresh.trace_id, 0);
        assert_ne!(fresh.span_id, 0);
        assert!(fresh.traceparent().to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn hex_digits_are_lowercase_hex_only() {
        assert_eq!(parse_hex(b"0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
        assert_eq!(parse_hex(b"ff"), Some(0xff));
        for bad in [&b"A"[..], b"0F", b"g0", b"-1", b" 1", b"/", b":", b"`", b"\xff"] {
            assert_eq!(parse_hex(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let every_byte_alone = (0..=255u8).filter(|b| parse_hex(&[*b]).is_some()).count();
        assert_eq!(every_byte_alone, 16);
    }

    #[tokio::test]
    async fn outgoing_headers_carry_the_request_context_only_inside_a_request() {
        let trace = TraceContext { trace_id: 1, span_id: 2, flags: 1 };
        let mut headers = http::HeaderMap::new();
        inject_current(&mut headers);
        assert!(headers.is_empty());
        trace.scope(async { inject_current(&mut headers) }).await;
        assert_eq!(headers[TRACEPARENT], "00-00000000000000000000000000000001-0000000000000002-01");
    }
}
