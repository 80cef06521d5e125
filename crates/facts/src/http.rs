//! HTTP API of the facts service: ingest, dashboard JSON, read-only SQL, maintenance, and the
//! Service Health page with its vendored chart library. Ingest, SQL and maintenance take a
//! bearer token (`crate::access`); the page and its two reads stay open to the observability
//! gateway.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};
use service_kit::error::{ErrorBody, ErrorDetail};
use service_kit::metrics::Metrics;
use service_kit::{ApiError, ConfigStore, FieldError, JwtKeys};

use crate::access::{self, Gate};
use crate::config::FactsConfig;
use crate::dashboard::Dashboard;
use crate::dashboard::{self, GroupBy};
use crate::markers::MarkerSource;
use crate::model::EventIds;
use crate::model::RequestFact;
use crate::pipeline::{Engine, IngestOutcome, RollupOutcome};
use crate::sql::{SqlFailure, SqlRunner};
use crate::validate::{self, BatchRejection};

/// Default largest ingest body (8 MiB); bigger bodies get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Longest dashboard window (31 days).
pub const MAX_WINDOW_SECS: i64 = 31 * 86_400;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub markers: Option<MarkerSource>,
    pub store: Arc<ConfigStore<FactsConfig>>,
    sql: SqlRunner,
    ingested: IntCounter,
    duplicates: IntCounter,
    rejected: IntCounterVec,
    unflushed: IntGauge,
    max_body_bytes: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        markers: Option<MarkerSource>,
        store: Arc<ConfigStore<FactsConfig>>,
        sql: SqlRunner,
        metrics: &Metrics,
        max_body_bytes: usize,
    ) -> Arc<Self> {
        let ingested = IntCounter::new("facts_ingested_total", "Facts made durable (after deduplication).")
            .expect("static metric definition");
        let duplicates = IntCounter::new("facts_duplicates_total", "Facts dropped as already stored (same event_id).")
            .expect("static metric definition");
        let rejected = IntCounterVec::new(
            Opts::new("facts_rejected_batches_total", "Ingest batches refused, by reason."),
            &["reason"],
        )
        .expect("static metric definition");
        let unflushed = IntGauge::new("facts_unflushed", "Acknowledged facts still in the WAL, not yet in Iceberg.")
            .expect("static metric definition");
        metrics.register(ingested.clone());
        metrics.register(duplicates.clone());
        metrics.register(rejected.clone());
        metrics.register(unflushed.clone());
        Arc::new(Self { engine, markers, store, sql, ingested, duplicates, rejected, unflushed, max_body_bytes })
    }
}

/// The service's own routes (health, metrics and `/config` are added by the caller). Ingest
/// checks the content type first (415 whoever asks), then the token, then reads the body.
pub fn router(state: Arc<AppState>, keys: &Arc<JwtKeys>) -> Router {
    let gate = |rule| middleware::from_fn_with_state(Gate::new(keys.clone(), rule), access::require);
    Router::new()
        .route(
            "/api/v1/facts",
            post(ingest)
                .layer(DefaultBodyLimit::max(state.max_body_bytes))
                .route_layer(gate(&access::INGEST))
                .route_layer(middleware::from_fn(access::require_json)),
        )
        .route("/api/v1/dashboard", get(get_dashboard))
        .route("/api/v1/services", get(get_services))
        .route("/api/v1/sql", post(run_sql).route_layer(gate(&access::SQL)))
        .route("/api/v1/flush", post(flush).route_layer(gate(&access::MAINTENANCE)))
        .route("/api/v1/rollup", post(rollup).route_layer(gate(&access::MAINTENANCE)))
        .route("/api/v1/recompute", post(recompute).route_layer(gate(&access::MAINTENANCE)))
        .route("/api/v1/status", get(status))
        .route("/", get(page))
        .route("/dashboard", get(page))
        .route("/assets/uPlot.iife.min.js", get(uplot_js))
        .route("/assets/uPlot.min.css", get(uplot_css))
        .with_state(state)
}

/// 400 for a batch: every broken rule of every record (up to a limit), nothing stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Rejection {
    error: RejectionDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RejectionDetail {
    /// `validation_failed`.
    #[schema(value_type = String)]
    code: &'static str,
    message: String,
    details: Vec<validate::RecordError>,
    /// Broken rules beyond those listed.
    more_errors: usize,
}

fn rejection(r: BatchRejection) -> Response {
    let records: std::collections::BTreeSet<usize> = r.errors.iter().map(|e| e.index).collect();
    let body = Rejection {
        error: RejectionDetail {
            code: "validation_failed",
            message: format!(
                "batch rejected: {} broken rule(s) in {} record(s); nothing was stored",
                r.errors.len() + r.more_errors,
                records.len()
            ),
            details: r.errors,
            more_errors: r.more_errors,
        },
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `POST /api/v1/facts`: one fact, a JSON array or NDJSON; 200 only once durable.
#[utoipa::path(post, path = "/api/v1/facts", tag = "facts", security(("bearer" = [])),
    request_body(description = "One fact (a JSON object), a JSON array of facts, or NDJSON (one fact per line). Strict: unknown fields, wrong types and out-of-range values reject the whole batch.",
        content(
            (Vec<RequestFact> = "application/json"),
            (String = "application/x-ndjson"),
        )),
    responses(
        (status = 200, body = IngestOutcome, description = "Every fact is durable (written to the WAL and fsynced); `duplicates` were already stored"),
        (status = 400, body = Rejection, description = "The batch broke rules; `details` names record, field and rule; nothing was stored"),
        (status = 401, body = ErrorBody, description = "No `Authorization: Bearer` token, or a forged or expired one; nothing was stored"),
        (status = 403, body = ErrorBody, description = "The token's role is neither `service` nor `instructor`; nothing was stored"),
        (status = 413, body = ErrorBody, description = "Body over the size limit"),
        (status = 415, body = ErrorBody, description = "`Content-Type` is not `application/json` or `application/x-ndjson` (UTF-8); checked before the token; nothing was stored"),
        (status = 503, body = ErrorBody, description = "The facts could not be stored; retry (ingest is idempotent by `event_id`)"),
    ))]
async fn ingest(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            state.rejected.with_label_values(&["too_large"]).inc();
            return ApiError::PayloadTooLarge { limit: state.max_body_bytes }.into_response();
        }
        Err(rejection) => return rejection.into_response(),
    };
    let now = Utc::now();
    // Parsing a large batch is CPU work: off the async workers.
    let parse = move |body: &[u8]| {
        let mut ids = EventIds::new(now);
        validate::parse_batch(body, now, || ids.next_id())
    };
    let parsed = if body.len() <= 64 << 10 {
        parse(&body)
    } else {
        match tokio::task::spawn_blocking(move || parse(&body)).await {
            Ok(parsed) => parsed,
            Err(err) => return ApiError::Internal(anyhow::Error::new(err)).into_response(),
        }
    };
    let facts = match parsed {
        Ok(facts) => facts,
        Err(r) => {
            state.rejected.with_label_values(&["invalid"]).inc();
            return rejection(r);
        }
    };
    match state.engine.ingest(facts).await {
        Ok(outcome) => {
            state.ingested.inc_by(outcome.accepted as u64);
            state.duplicates.inc_by(outcome.duplicates as u64);
            state.unflushed.set(i64::try_from(state.engine.unflushed()).unwrap_or(i64::MAX));
            Json(outcome).into_response()
        }
        Err(err) => {
            ApiError::Unavailable { message: format!("facts not stored: {err:#}"), retry_after_secs: 1 }.into_response()
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DashboardParams {
    /// Start of the window (RFC 3339); default one hour before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End of the window (RFC 3339); default now. At most 31 days after `from`.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Only this service's facts.
    service: Option<String>,
    /// `none` (default), `path_template`, `method` or `service`.
    #[param(pattern = "^(none|path_template|method|service)?$")]
    group_by: Option<String>,
    /// Step of the series: a multiple of 60 from 60 to 86400; default chosen from the window.
    #[param(minimum = 60, maximum = 86_400, multiple_of = 60)]
    step_seconds: Option<i64>,
}

fn parse_ts(field: &str, value: Option<&str>, default: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::field(field, "rfc3339", "must be an RFC 3339 timestamp")),
    }
}

fn window(from: Option<&str>, to: Option<&str>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let now = Utc::now();
    let to = parse_ts("to", to, now)?;
    let from = parse_ts("from", from, to - Duration::hours(1))?;
    if from >= to {
        return Err(ApiError::field("from", "before_to", "must be before `to`"));
    }
    if (to - from).num_seconds() > MAX_WINDOW_SECS {
        return Err(ApiError::field("to", "max_window", "the window may span at most 31 days"));
    }
    Ok((from, to))
}

/// `GET /api/v1/dashboard`: the "Service Health" series over a window.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "facts", params(DashboardParams),
    responses(
        (status = 200, body = Dashboard, description = "Requests, errors, error rate, throughput and p50/p95/p99 per step, per group, with config-change markers"),
        (status = 400, body = ErrorBody, description = "Invalid query; `details` names the field and rule"),
    ))]
async fn get_dashboard(
    State(state): State<Arc<AppState>>,
    params: Result<Query<DashboardParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (from, to) = window(p.from.as_deref(), p.to.as_deref())?;
    let group_by = match p.group_by.as_deref() {
        None | Some("" | "none") => GroupBy::None,
        Some("path_template") => GroupBy::PathTemplate,
        Some("method") => GroupBy::Method,
        Some("service") => GroupBy::Service,
        Some(_) => {
            return Err(ApiError::field("group_by", "enum", "must be one of none, path_template, method, service"));
        }
    };
    let step = match p.step_seconds {
        None => dashboard::auto_step(from.timestamp(), to.timestamp()),
        Some(s) if (60..=86_400).contains(&s) && s % 60 == 0 => s,
        Some(_) => return Err(ApiError::field("step_seconds", "range", "must be a multiple of 60 from 60 to 86400")),
    };
    if (to - from).num_seconds() / step > 10_000 {
        return Err(ApiError::field("step_seconds", "max_points", "the window would have more than 10000 points"));
    }
    let service = p.service.filter(|s| !s.is_empty());
    let markers = match &state.markers {
        Some(source) => source.between(from, to, service.as_deref()).await.unwrap_or_else(|err| {
            tracing::warn!(error = format!("{err:#}"), "config-change markers unavailable");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let q = dashboard::Query { from: from.timestamp(), to: to.timestamp(), step, service, group_by };
    let board = dashboard::dashboard(&state.engine, &q, markers).await?;
    Ok(Json(board).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WindowParams {
    /// Start of the window (RFC 3339); default one hour before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End of the window (RFC 3339); default now. At most 31 days after `from`.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Services {
    /// Services with facts in the window.
    services: Vec<String>,
}

/// `GET /api/v1/services`: the services that reported facts in a window.
#[utoipa::path(get, path = "/api/v1/services", tag = "facts", params(WindowParams),
    responses(
        (status = 200, body = Services),
        (status = 400, body = ErrorBody, description = "Invalid query; `details` names the field and rule"),
    ))]
async fn get_services(
    State(state): State<Arc<AppState>>,
    params: Result<Query<WindowParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (from, to) = window(p.from.as_deref(), p.to.as_deref())?;
    let q = dashboard::Query {
        from: from.timestamp(),
        to: to.timestamp(),
        step: (to - from).num_seconds().max(60),
        service: None,
        group_by: GroupBy::Service,
    };
    let board = dashboard::dashboard(&state.engine, &q, Vec::new()).await?;
    let services: Vec<_> = board.series.into_iter().filter_map(|s| s.group).collect();
    Ok(Json(Services { services }).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    /// One read-only statement (no DDL, DML or SET) over `request_facts` and `metrics_1m`.
    #[schema(min_length = 1, pattern = r"\S")]
    sql: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SqlRows {
    /// The result rows as JSON objects, at most `sql.max_rows` (10 000 by default).
    #[schema(value_type = Vec<Object>)]
    rows: serde_json::Value,
}

/// `POST /api/v1/sql`: one read-only statement over `request_facts` and `metrics_1m`, within
/// the `sql` limits of `/config`.
#[utoipa::path(post, path = "/api/v1/sql", tag = "facts", security(("bearer" = [])), request_body = SqlRequest,
    responses(
        (status = 200, body = SqlRows),
        (status = 400, body = ErrorBody, description = "Malformed body, or a statement that does not parse, is not read-only or fails; `details` names `sql`"),
        (status = 401, body = ErrorBody, description = "No `Authorization: Bearer` token, or a forged or expired one"),
        (status = 403, body = ErrorBody, description = "The token's role is neither `learner` nor `instructor`"),
        (status = 415, body = ErrorBody, description = "`Content-Type` is not `application/json`"),
        (status = 422, body = ErrorBody, description = "The statement hit a limit and was stopped: code `sql_time_limit` (`sql.timeout_ms`) or `sql_memory_limit` (`sql.memory_limit_mib`); `details` names `sql` and the rule"),
        (status = 503, body = ErrorBody, description = "`sql.max_concurrent` statements are already running; retry"),
    ))]
async fn run_sql(
    State(state): State<Arc<AppState>>,
    body: Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| match e {
        axum::extract::rejection::JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("the Content-Type header must be `application/json`".to_owned())
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    })?;
    let limits = state.store.current().sql.clone();
    match state.sql.run(state.engine.clone(), req.sql, &limits).await {
        Ok(rows) => Ok(Json(SqlRows { rows }).into_response()),
        Err(failure) => Ok(sql_error(failure)),
    }
}

/// The limits are the statement's, not the request's shape: 422, with its own code.
fn sql_error(failure: SqlFailure) -> Response {
    let limit = |code: &str, rule: &str, message: String, detail: String| {
        let body = ErrorBody {
            error: ErrorDetail { code: code.to_owned(), message, details: vec![FieldError::new("sql", rule, detail)] },
        };
        (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
    };
    match failure {
        SqlFailure::TimeLimit { .. } => {
            let message = failure.to_string();
            limit("sql_time_limit", "time_limit", message.clone(), message)
        }
        SqlFailure::MemoryLimit { ref detail, .. } => {
            let detail = detail.clone();
            limit("sql_memory_limit", "memory_limit", failure.to_string(), detail)
        }
        SqlFailure::Invalid(message) => ApiError::field("sql", "query", message).into_response(),
        SqlFailure::Execution(message) => ApiError::field("sql", "execution", message).into_response(),
        SqlFailure::Busy { .. } => {
            ApiError::Unavailable { message: failure.to_string(), retry_after_secs: 1 }.into_response()
        }
        SqlFailure::Internal(err) => ApiError::Internal(err).into_response(),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Flushed {
    /// Facts committed to Iceberg by this flush.
    flushed: usize,
}

/// `POST /api/v1/flush`: commits the acknowledged facts in the WAL to Iceberg now.
#[utoipa::path(post, path = "/api/v1/flush", tag = "facts", security(("bearer" = [])), responses(
    (status = 200, body = Flushed),
    (status = 401, body = ErrorBody, description = "No `Authorization: Bearer` token, or a forged or expired one"),
    (status = 403, body = ErrorBody, description = "The token's role is not `instructor`"),
))]
async fn flush(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let flushed = state.engine.flush().await?;
    state.unflushed.set(i64::try_from(state.engine.unflushed()).unwrap_or(i64::MAX));
    Ok(Json(Flushed { flushed }).into_response())
}

/// `POST /api/v1/rollup`: rolls the committed facts up into `metrics_1m` now.
#[utoipa::path(post, path = "/api/v1/rollup", tag = "facts", security(("bearer" = [])), responses(
    (status = 200, body = RollupOutcome),
    (status = 401, body = ErrorBody, description = "No `Authorization: Bearer` token, or a forged or expired one"),
    (status = 403, body = ErrorBody, description = "The token's role is not `instructor`"),
))]
async fn rollup(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(state.engine.rollup(Utc::now()).await?).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecomputeParams {
    /// Start of the window (RFC 3339).
    #[param(value_type = String, format = DateTime)]
    from: String,
    /// End of the window (RFC 3339), after `from` and at most 31 days after it.
    #[param(value_type = String, format = DateTime)]
    to: String,
}

/// `POST /api/v1/recompute?from=…&to=…`: rebuilds `metrics_1m` for the window (at most 31 days).
#[utoipa::path(post, path = "/api/v1/recompute", tag = "facts", security(("bearer" = [])), params(RecomputeParams),
    responses(
        (status = 200, body = RollupOutcome),
        (status = 400, body = ErrorBody, description = "Invalid window; `details` names the field and rule"),
        (status = 401, body = ErrorBody, description = "No `Authorization: Bearer` token, or a forged or expired one"),
        (status = 403, body = ErrorBody, description = "The token's role is not `instructor`"),
    ))]
async fn recompute(
    State(state): State<Arc<AppState>>,
    params: Result<Query<RecomputeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let from = parse_ts("from", Some(&p.from), Utc::now())?;
    let to = parse_ts("to", Some(&p.to), Utc::now())?;
    if from >= to {
        return Err(ApiError::field("from", "before_to", "must be before `to`"));
    }
    // Rebuilt a day at a time under the maintenance lock: a window of centuries would hold
    // flushes and rollups for hours.
    if (to - from).num_seconds() > MAX_WINDOW_SECS {
        return Err(ApiError::field("to", "max_window", "the window may span at most 31 days"));
    }
    Ok(Json(state.engine.recompute(from, to).await?).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Status {
    /// Acknowledged facts in the WAL, not yet committed to Iceberg.
    unflushed_facts: usize,
    /// Every minute before this (Unix seconds) is rolled up, unless its hour is dirty.
    rollup_watermark: Option<i64>,
    /// Hours (Unix seconds) with late facts, to be rolled up again.
    dirty_hours: Vec<i64>,
    /// `flush_interval_ms` of `/config`, in seconds (rounded down).
    flush_interval_seconds: u64,
    /// `rollup_interval_secs` of `/config`.
    rollup_interval_seconds: u64,
    /// Where the Iceberg tables live.
    warehouse: String,
}

/// `GET /api/v1/status`: the lake's flush and rollup state.
#[utoipa::path(get, path = "/api/v1/status", tag = "facts", responses((status = 200, body = Status)))]
async fn status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let rollup = state.engine.rollup_state();
    let config = state.store.current();
    Ok(Json(Status {
        unflushed_facts: state.engine.unflushed(),
        rollup_watermark: rollup.watermark,
        dirty_hours: rollup.dirty_hours.into_iter().collect(),
        flush_interval_seconds: config.flush_interval().as_secs(),
        rollup_interval_seconds: config.rollup_interval_secs,
        warehouse: state.engine.lake.warehouse.clone(),
    })
    .into_response())
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "ObservaStack facts", description = "The request-fact lake: ingest, the Service Health dashboard's queries, SQL, and the flush and rollup jobs."),
    paths(ingest, get_dashboard, get_services, run_sql, flush, rollup, recompute, status),
    components(schemas(ErrorBody, service_kit::error::ErrorDetail, service_kit::FieldError)),
    tags((name = "facts", description = "Request-fact lake (served on its own port; `/healthz`, `/readyz`, `/metrics` and `/config` as every service). Ingest needs a `service` (or `instructor`) token, SQL a `learner` or `instructor` token, flush, rollup and recompute an `instructor` token; the dashboard, the service list, the status and the Service Health page need none. Every error is JSON.")),
)]
pub(crate) struct FactsApi;

async fn page() -> Html<&'static str> {
    Html(include_str!("../assets/service-health.html"))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    resp
}

async fn uplot_js() -> Response {
    asset(include_str!("../assets/uPlot.iife.min.js"), "text/javascript; charset=utf-8")
}

async fn uplot_css() -> Response {
    asset(include_str!("../assets/uPlot.min.css"), "text/css; charset=utf-8")
}
