//! The orchestrator's HTTP API (`/api/*`), every route behind the stack's JWT: the scenario
//! catalog, the run lifecycle, run history and the WebSocket.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use serde::Deserialize;
use serde_json::Value;
use service_kit::auth::require_token;
use service_kit::body::{DEFAULT_BODY_LIMIT, JsonBody};
use service_kit::error::{ErrorBody, ErrorDetail};
use service_kit::{ApiError, Caller, JwtKeys, Role};
use uuid::Uuid;

use crate::catalog::{self, ScenarioSummary};
use crate::lifecycle::{Orchestrator, ResetReport};
use crate::model::{RunDetail, RunSummary};
use crate::store;

/// Runs per `GET /api/runs` unless `limit` says otherwise.
pub const DEFAULT_LIST: i64 = 20;

pub fn router(orchestrator: Arc<Orchestrator>, keys: Arc<JwtKeys>) -> Router {
    Router::new()
        .route("/api/scenarios", get(list_scenarios))
        .route("/api/scenarios/{id}", get(get_scenario))
        .route("/api/runs", post(start_run).get(list_runs))
        .route("/api/runs/current", get(current_run))
        .route("/api/runs/current/stop", post(stop_run))
        .route("/api/runs/current/give-up", post(give_up))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/reset", post(reset))
        .route("/api/ws", get(websocket))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .with_state(orchestrator)
}

fn internal(err: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(err.into())
}

/// Every scenario of the catalog.
#[utoipa::path(
    get, path = "/api/scenarios", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 200, description = "The catalog", body = [ScenarioSummary]),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_scenarios(State(orch): State<Arc<Orchestrator>>) -> Json<Vec<ScenarioSummary>> {
    Json(orch.catalog.summaries())
}

/// One scenario. Instructors see all of it; learners see the story, the load and the success
/// conditions, and the faults, cause, hints, config predicates, solution and debrief only once a
/// run of the scenario was resolved or given up and none of it is active (a stopped or reset
/// run reveals nothing).
#[utoipa::path(
    get, path = "/api/scenarios/{id}", tag = "orchestrator", security(("bearer" = [])),
    params(("id" = String, Path, description = "Scenario id")),
    responses(
        (status = 200, description = "The scenario (see the description for what learners see)", body = Object),
        (status = 404, description = "No such scenario", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn get_scenario(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let scenario = orch.catalog.get(&id).ok_or_else(|| ApiError::NotFound(format!("no scenario `{id}`")))?;
    if caller.may(Role::Instructor) {
        return Ok(Json(catalog::full_view(&scenario)));
    }
    let active = match orch.active_id().await {
        Some(run_id) => store::run(&orch.shared.db, run_id).await.map_err(internal)?.map(|r| r.scenario_id),
        None => None,
    };
    let over = active.as_deref() != Some(id.as_str())
        && store::scenario_revealed(&orch.shared.db, &id).await.map_err(internal)?;
    Ok(Json(if over { catalog::full_view(&scenario) } else { catalog::learner_view(&scenario) }))
}

/// Body of `POST /api/runs`.
#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Scenario id.
    pub scenario: String,
    /// Multiplies every duration of the scenario, 0.01..=1.0; 1.0 when left out or `null`.
    #[schema(minimum = 0.01, maximum = 1.0, default = 1.0, required = false, nullable = true)]
    pub time_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl StartRun {
    /// Reads the body field by field, so every complaint names its field and rule (a missing
    /// or unknown top-level key included, which serde would only pin on the whole body).
    fn from_json(body: &Value) -> Result<Self, ApiError> {
        let Some(fields) = body.as_object() else {
            return Err(ApiError::field("(body)", "type", "the body must be a JSON object"));
        };
        if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "scenario" | "time_scale")) {
            return Err(ApiError::field(
                unknown.as_str(),
                "unknown_field",
                format!("unknown field `{unknown}`, expected `scenario` or `time_scale`"),
            ));
        }
        let scenario = match fields.get("scenario") {
            None | Some(Value::Null) => {
                return Err(ApiError::field("scenario", "required", "name the scenario to run"));
            }
            Some(Value::String(id)) => id.clone(),
            Some(_) => return Err(ApiError::field("scenario", "type", "a scenario id is a string")),
        };
        let time_scale = match fields.get("time_scale") {
            None | Some(Value::Null) => one(),
            Some(value) => {
                value.as_f64().ok_or_else(|| ApiError::field("time_scale", "type", "time_scale is a number"))?
            }
        };
        if !(scenario::TIME_SCALE_MIN..=scenario::TIME_SCALE_MAX).contains(&time_scale) {
            return Err(ApiError::field(
                "time_scale",
                "range",
                format!(
                    "time_scale must be between {} and {}; got {time_scale}",
                    scenario::TIME_SCALE_MIN,
                    scenario::TIME_SCALE_MAX
                ),
            ));
        }
        Ok(Self { scenario, time_scale })
    }
}

/// Starts a run: services reset to defaults, the runner's load on, then baseline → incident.
#[utoipa::path(
    post, path = "/api/runs", tag = "orchestrator", security(("bearer" = [])),
    request_body = StartRun,
    responses(
        (status = 201, description = "Started", body = RunSummary),
        (status = 400, description = "Bad parameters, naming the field", body = ErrorBody),
        (status = 404, description = "No such scenario", body = ErrorBody),
        (status = 409, description = "A run is already active", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn start_run(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<RunSummary>), ApiError> {
    let body = StartRun::from_json(&body)?;
    let run = orch.start(&caller, &body.scenario, body.time_scale).await?;
    Ok((StatusCode::CREATED, Json(run.summary())))
}

/// The active run with its timeline.
#[utoipa::path(
    get, path = "/api/runs/current", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 200, description = "The active run", body = RunDetail),
        (status = 404, description = "No run is active", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn current_run(State(orch): State<Arc<Orchestrator>>) -> Result<Json<RunDetail>, ApiError> {
    let run = store::active_run(&orch.shared.db)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound("no run is active".into()))?;
    detail(&orch, run).await
}

async fn detail(orch: &Orchestrator, run: store::RunRow) -> Result<Json<RunDetail>, ApiError> {
    let events = store::events(&orch.shared.db, run.id).await.map_err(internal)?;
    Ok(Json(RunDetail { run: run.summary(), events }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Most runs returned, newest first: 1..=200, default 20.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// Run history, newest first.
#[utoipa::path(
    get, path = "/api/runs", tag = "orchestrator", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Runs", body = [RunSummary]),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(orch): State<Arc<Orchestrator>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<RunSummary>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST);
    if !(1..=store::MAX_LIST).contains(&limit) {
        return Err(ApiError::field("limit", "range", format!("limit must be between 1 and {}", store::MAX_LIST)));
    }
    let runs = store::list_runs(&orch.shared.db, limit).await.map_err(internal)?;
    Ok(Json(runs.iter().map(store::RunRow::summary).collect()))
}

/// One run with its timeline.
#[utoipa::path(
    get, path = "/api/runs/{id}", tag = "orchestrator", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(orch): State<Arc<Orchestrator>>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::field("id", "format", "a run id is a UUID"))?;
    let run = store::run(&orch.shared.db, id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    detail(&orch, run).await
}

/// Abandons the active run (load off, services back to defaults). Never counts as a win, and
/// reveals nothing of the scenario.
#[utoipa::path(
    post, path = "/api/runs/current/stop", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 200, description = "The abandoned run", body = RunSummary),
        (status = 404, description = "No run is active", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn stop_run(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<RunSummary>, ApiError> {
    Ok(Json(orch.stop(&caller).await?.summary()))
}

/// Gives the active run up: load off, services back to defaults, and the debrief with the
/// solution is shown (`completed` with `outcome: gave_up`). The way to see the answer; a stop
/// reveals nothing.
#[utoipa::path(
    post, path = "/api/runs/current/give-up", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 200, description = "The run, ended `gave_up`, with its debrief in `result`", body = RunSummary),
        (status = 404, description = "No run is active", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn give_up(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<RunSummary>, ApiError> {
    Ok(Json(orch.give_up(&caller).await?.summary()))
}

/// Abandons any active run and resets every service's `/config` to its defaults.
#[utoipa::path(
    post, path = "/api/reset", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 200, description = "What was reset", body = ResetReport),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn reset(
    State(orch): State<Arc<Orchestrator>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ResetReport>, ApiError> {
    Ok(Json(orch.reset(&caller).await?))
}

/// The console's live feed: typed JSON messages (`state`, `hint`, `event`, `slis`,
/// `completed`; see `WsMessage`). On connect: the current `state`, the run's hints so far, its
/// `completed` if resolved, and the latest `slis`. The token comes from `Authorization: Bearer`
/// or the `observastack_token` cookie.
#[utoipa::path(
    get, path = "/api/ws", tag = "orchestrator", security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to WebSocket; messages are `WsMessage`", body = crate::model::WsMessage),
        (status = 400, description = "Not a WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn websocket(
    State(orch): State<Arc<Orchestrator>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // axum's own rejection is plain text; every error here is JSON, as on the control gateway.
        Err(rejection) => {
            let error = ErrorDetail {
                code: "websocket_required".to_owned(),
                message: format!("this route speaks WebSocket only: {}", rejection.body_text()),
                details: Vec::new(),
            };
            return (rejection.status(), Json(ErrorBody { error })).into_response();
        }
    };
    let hub = orch.shared.hub.clone();
    let stopping = orch.stopping();
    // Consoles only listen: an inbound message past a small size ends the connection before
    // it is buffered, so one client cannot make the orchestrator hold megabytes.
    ws.max_message_size(crate::ws::MAX_INBOUND_MESSAGE)
        .max_frame_size(crate::ws::MAX_INBOUND_MESSAGE)
        .on_upgrade(move |socket| crate::ws::serve_client(hub, socket, stopping))
}
