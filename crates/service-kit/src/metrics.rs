//! Prometheus metrics every service exports, declared once per service in its own registry
//! (several services may share a process in tests), plus the HTTP middleware that records
//! `http_server_request_duration_seconds` by matched route template and traces the request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Either;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::task::futures::TaskLocalFuture;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::TraceContext;

/// Buckets from the OpenTelemetry HTTP semantic conventions, with two finer ones in front
/// because a proxy hop is measured in hundreds of microseconds.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

pub use crate::facts::UNMATCHED_ROUTE;

pub struct Metrics {
    pub service: String,
    pub registry: Registry,
    pub http_duration: HistogramVec,
    pub config_revision: IntGauge,
    pub config_changes: IntCounterVec,
    /// RequestFact emitter, when a facts URL was given at start-up.
    pub facts: Option<crate::facts::FactEmitter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("service", &self.service).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Declares the shared metrics of `service`, labelled `service=<name>` throughout, and
    /// starts the RequestFact emitter when `OBSERVASTACK_FACTS_URL` is set (with the token of
    /// `OBSERVASTACK_SERVICE_TOKEN`).
    pub fn new(service: &str) -> Arc<Self> {
        // Read once at start-up; the facts service never reports to itself.
        let target = crate::facts::FactsTarget::from_env().filter(|_| service != "facts");
        Self::with_facts_target(service, target)
    }

    /// As [`Metrics::new`] with an explicit facts URL and no token (`None`: no emitter).
    pub fn with_facts_url(service: &str, facts_url: Option<&str>) -> Arc<Self> {
        Self::with_facts_target(service, facts_url.map(|url| crate::facts::FactsTarget::new(url, None)))
    }

    /// As [`Metrics::new`] with an explicit facts target (`None`: no emitter).
    pub fn with_facts_target(service: &str, facts: Option<crate::facts::FactsTarget>) -> Arc<Self> {
        let registry =
            Registry::new_custom(None, Some([("service".to_owned(), service.to_owned())].into())).unwrap_or_default();
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_server_request_duration_seconds", "Duration of HTTP server requests.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["http_route", "http_request_method", "http_response_status_code"],
        )
        .expect("static metric definition");
        let build_info = IntGauge::with_opts(
            Opts::new("observastack_build_info", "Build of the running service; always 1.")
                .const_label("version", crate::VERSION),
        )
        .expect("static metric definition");
        build_info.set(1);
        let config_revision =
            IntGauge::new("observastack_config_revision", "Revision of the runtime configuration in force.")
                .expect("static metric definition");
        let config_changes = IntCounterVec::new(
            Opts::new("observastack_config_changes_total", "Runtime configuration change attempts by outcome."),
            &["outcome"],
        )
        .expect("static metric definition");
        let mut metrics =
            Self { service: service.to_owned(), registry, http_duration, config_revision, config_changes, facts: None };
        if let Some((emitter, dropped)) =
            facts.and_then(|target| crate::facts::FactEmitter::start(service, &target, crate::facts::QUEUE_CAPACITY))
        {
            metrics.register(dropped);
            metrics.facts = Some(emitter);
        }
        metrics.register(metrics.http_duration.clone());
        metrics.register(build_info);
        metrics.register(metrics.config_revision.clone());
        metrics.register(metrics.config_changes.clone());
        #[cfg(target_os = "linux")]
        metrics.register(prometheus::process_collector::ProcessCollector::for_self());
        Arc::new(metrics)
    }

    /// Registers a service-specific collector. Names are static, so a clash is a programming
    /// error caught by the first test that builds the service.
    pub fn register<C: prometheus::core::Collector + 'static>(&self, collector: C) {
        if let Err(err) = self.registry.register(Box::new(collector)) {
            tracing::error!(error = %err, "metric registration failed");
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %err, "metric encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> Response {
    let mut resp = metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Middleware: one histogram observation per request labelled by the matched route template,
/// inside the request's trace context (see [`Metrics::observe_request`]).
pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>`: cloning it does not copy the template.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let method = req.method().clone();
    let trace = RequestTrace::start(&method, route, req.headers());
    let Some(facts) = &metrics.facts else {
        return metrics.observe_request(route, &method, trace, next.run(req)).await;
    };
    let user_agent = req.headers().get(header::USER_AGENT).cloned();
    let start = Instant::now();
    let resp = metrics.observe_request(route, &method, trace, next.run(req)).await;
    facts.emit(route, &method, resp.status().as_u16(), start.elapsed(), user_agent.as_ref());
    resp
}

/// How one request is traced: an OpenTelemetry server span when spans are exported, else a
/// plain W3C [`TraceContext`] (see [`crate::telemetry`]).
pub enum RequestTrace {
    Span(tracing::Span),
    Context(TraceContext),
}

impl RequestTrace {
    /// Continues the caller's trace (W3C `traceparent` in `headers`) or starts one.
    pub fn start(method: &Method, route: &str, headers: &HeaderMap) -> Self {
        if !crate::telemetry::exporting() {
            return Self::Context(TraceContext::continue_from(headers));
        }
        Self::span(method, route, headers)
    }

    /// [`RequestTrace::start`] for a server that keeps the request's header fields unparsed:
    /// `traceparent` is the caller's field, and `headers` builds the fields OpenTelemetry's
    /// propagator reads, called only when spans are exported.
    pub fn start_with(
        method: &Method,
        route: &str,
        traceparent: Option<&[u8]>,
        headers: impl FnOnce() -> HeaderMap,
    ) -> Self {
        if !crate::telemetry::exporting() {
            return Self::Context(TraceContext::continue_from_value(traceparent));
        }
        Self::span(method, route, &headers())
    }

    fn span(method: &Method, route: &str, headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(
            "http.request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(crate::telemetry::extract_context(headers));
        Self::Span(span)
    }
}

impl RequestTrace {
    /// Runs `inner` (the handling of one request) inside this trace; resolves to the response
    /// and how long it took.
    ///
    /// A hand-written future rather than an `async fn`: an `async fn` keeps the argument
    /// `inner` and the future it awaits side by side in its state, twice the size of the
    /// request's whole future (kilobytes in the gateway), and every move of that future copies
    /// all of it.
    pub fn run<B, F>(self, inner: F) -> Traced<F>
    where
        F: Future<Output = http::Response<B>>,
    {
        let inner = match &self {
            Self::Span(span) => Either::Left(inner.instrument(span.clone())),
            Self::Context(context) => Either::Right(context.scope(inner)),
        };
        Traced { inner, trace: self, start: None }
    }

    /// What the trace notes once the response is known.
    fn finish(&self, status: StatusCode) {
        let failed = status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE;
        match self {
            Self::Span(span) => {
                span.record("http.response.status_code", status.as_u16());
                if failed {
                    span.in_scope(|| tracing::debug!(status = status.as_u16(), "request failed"));
                }
            }
            Self::Context(context) if failed => {
                context.in_scope(|| tracing::debug!(status = status.as_u16(), "request failed"));
            }
            Self::Context(_) => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future inside its trace: see [`RequestTrace::run`].
    pub struct Traced<F> {
        #[pin]
        inner: Either<tracing::instrument::Instrumented<F>, TaskLocalFuture<TraceContext, F>>,
        trace: RequestTrace,
        // Set at the first poll, as an `async fn` would.
        start: Option<Instant>,
    }
}

impl<B, F> Future for Traced<F>
where
    F: Future<Output = http::Response<B>>,
{
    type Output = (http::Response<B>, std::time::Duration);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let start = *this.start.get_or_insert_with(Instant::now);
        let resp = ready!(this.inner.poll(cx));
        let elapsed = start.elapsed();
        this.trace.finish(resp.status());
        Poll::Ready((resp, elapsed))
    }
}

impl Metrics {
    /// Runs `inner` (the handling of one request) inside `trace` and records its duration in
    /// `http_server_request_duration_seconds{http_route=route, ...}`. [`observe`] is the axum
    /// middleware built on it.
    pub fn observe_request<B, F>(
        &self,
        route: &str,
        method: &Method,
        trace: RequestTrace,
        inner: F,
    ) -> impl Future<Output = http::Response<B>>
    where
        F: Future<Output = http::Response<B>>,
    {
        // `map`, not an `async` block awaiting `inner`: see `RequestTrace::run`.
        trace.run(inner).map(move |(resp, elapsed)| {
            self.http_duration
                .with_label_values(&[route, method.as_str(), resp.status().as_str()])
                .observe(elapsed.as_secs_f64());
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_traced_request_runs_in_its_context_and_reports_its_status_and_duration() {
        let context = TraceContext::continue_from(&HeaderMap::new());
        let traced = RequestTrace::Context(context).run(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Seen inside the request's future, after a suspension too.
            assert_eq!(TraceContext::current(), Some(context));
            let mut resp = http::Response::new(());
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        });
        assert_eq!(TraceContext::current(), None, "not outside the request");
        let (resp, elapsed) = traced.await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
    }
}
