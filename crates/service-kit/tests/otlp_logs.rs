//! Log records leave over OTLP/HTTP, as spans do, carrying the trace and span ids of the span
//! they were logged in; without an endpoint nothing leaves.
#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use prost::Message as _;
use serde_json::Value;
use service_kit::telemetry;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Request paths and bodies, in arrival order.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A collector stand-in on loopback: 200 to OTLP logs and traces, every body kept. Its runtime
/// is its own, so the exporter's blocking client can flush to it from the test thread.
struct Collector {
    endpoint: String,
    received: Received,
    _runtime: tokio::runtime::Runtime,
}

fn start_collector() -> Collector {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let received = Received::default();
    let app = Router::new()
        .route("/v1/logs", post(keep_body))
        .route("/v1/traces", post(keep_body))
        .with_state(received.clone());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Collector { endpoint, received, _runtime: runtime }
}

async fn keep_body(State(received): State<Received>, uri: Uri, body: Bytes) -> StatusCode {
    received.lock().unwrap().push((uri.path().to_owned(), body));
    StatusCode::OK
}

impl Collector {
    /// Every log record received so far, each with its resource's `service.name`.
    fn log_records(&self) -> Vec<(Option<String>, LogRecord)> {
        let received = self.received.lock().unwrap();
        let mut records = Vec::new();
        for (_, body) in received.iter().filter(|(path, _)| path == "/v1/logs") {
            let request = ExportLogsServiceRequest::decode(body.as_ref()).unwrap();
            for resource_logs in request.resource_logs {
                let attributes = resource_logs.resource.map(|r| r.attributes).unwrap_or_default();
                let service = string_attribute(&attributes, "service.name");
                for scope_logs in resource_logs.scope_logs {
                    records.extend(scope_logs.log_records.into_iter().map(|record| (service.clone(), record)));
                }
            }
        }
        records
    }

    /// Polls (bounded) until a log record whose body contains `message` has arrived.
    fn wait_for_log_record(&self, message: &str) -> (Option<String>, LogRecord) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self.log_records().into_iter().find(|(_, record)| body_text(record).contains(message))
            {
                return found;
            }
            assert!(Instant::now() < deadline, "no log record with `{message}` arrived: {:?}", self.log_records());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

fn body_text(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|body| body.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_records_are_exported_over_otlp_with_the_trace_and_span_ids_of_their_span() {
    let collector = start_collector();
    let stdout = Buffer::default();
    let writer = stdout.clone();
    let (dispatch, guard) =
        telemetry::build("shop", Some(&collector.endpoint), "info", move || writer.clone()).unwrap();
    assert!(guard.exporting());
    let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("http.request");
        {
            let _entered = span.enter();
            tracing::warn!(order_id = 42, "order rejected");
            tracing::debug!("below the level filter");
            // What the exporter's own crates log must not be exported (it would export itself).
            tracing::info!(target: "opentelemetry_sdk", "exporter internals");
            tracing::info!(target: "hyper_util::client", "exporter connection");
        }
        // Not entered, so no OpenTelemetry context is active on this thread: the ids come from
        // the event's own span.
        tracing::error!(parent: &span, "order retried");
        let context = span.context();
        let span_context = context.span().span_context().clone();
        (span_context.trace_id(), span_context.span_id())
    });
    assert_ne!(trace_id, TraceId::INVALID);
    assert_ne!(span_id, SpanId::INVALID);
    drop(guard);

    let (service, record) = collector.wait_for_log_record("order rejected");
    assert_eq!(service.as_deref(), Some("shop"), "resource service.name");
    assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(record.severity_text, "WARN");
    assert_eq!(record.trace_id, trace_id.to_bytes().to_vec());
    assert_eq!(record.span_id, span_id.to_bytes().to_vec());
    assert!(record.attributes.iter().any(|kv| kv.key == "order_id"), "{:?}", record.attributes);
    let (_, retried) = collector.wait_for_log_record("order retried");
    assert_eq!(retried.severity_number, SeverityNumber::Error as i32);
    assert_eq!((retried.trace_id, retried.span_id), (record.trace_id, record.span_id));
    let mut exported: Vec<String> = collector.log_records().iter().map(|(_, record)| body_text(record)).collect();
    exported.sort();
    assert_eq!(exported, ["order rejected", "order retried"], "only the service's own events at or above the filter");
    let paths: Vec<String> = collector.received.lock().unwrap().iter().map(|(path, _)| path.clone()).collect();
    assert!(paths.iter().any(|path| path == "/v1/traces"), "the span is exported too: {paths:?}");

    // The JSON line on stdout is unchanged and names the same trace.
    let text = String::from_utf8(stdout.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let line = lines.iter().find(|line| line["message"] == "order rejected").unwrap();
    assert_eq!(line["trace_id"], trace_id.to_string());
    assert_eq!(line["span_id"], span_id.to_string());
    assert_eq!(line["service"], "shop");
}

#[test]
fn nothing_is_exported_without_an_endpoint() {
    let collector = start_collector();
    for endpoint in [None, Some("")] {
        let (dispatch, guard) = telemetry::build("shop", endpoint, "info", std::io::sink).unwrap();
        assert!(!guard.exporting(), "{endpoint:?}");
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("http.request");
            let _entered = span.enter();
            tracing::warn!("order rejected");
        });
        // Export, when there is one, is flushed by this drop (see the test above).
        drop(guard);
    }
    assert!(collector.received.lock().unwrap().is_empty());
}
