//! `GET /slis`: the user-side SLIs over a trailing window, as the orchestrator and consoles
//! read them every second. Read-only and unauthenticated on this internal listener (the
//! gateways decide who reaches it); cheap, since it merges at most a window of per-second
//! histograms.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use scenario::sli::SliSnapshot;
use service_kit::{ApiError, ConfigStore};

use crate::config::{MAX_WINDOW_SECS, RunnerConfig};
use crate::load::Engine;
use crate::stats::Stats;

#[derive(Clone)]
pub struct SliState {
    pub stats: Arc<Stats>,
    pub engine: Arc<Engine>,
    pub store: Arc<ConfigStore<RunnerConfig>>,
}

pub fn router(state: SliState) -> Router {
    Router::new().route("/slis", get(slis)).with_state(state)
}

/// SLIs per journey and for all journeys over the last `window_secs` (default: `slis.window_secs`
/// of `/config`).
#[utoipa::path(get, path = "/slis", tag = "runner",
    params(("window_secs" = Option<u32>, Query, minimum = 1, maximum = 300,
        description = "Trailing window in seconds (default: `slis.window_secs` of `/config`)")),
    responses(
        (status = 200, body = SliSnapshot),
        (status = 400, body = service_kit::error::ErrorBody, description = "Unknown query parameter, or `window_secs` not a whole number in range"),
    ))]
pub async fn slis(
    State(state): State<SliState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<SliSnapshot>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "window_secs") {
        return Err(ApiError::field(unknown.as_str(), "unknown_field", format!("unknown query parameter `{unknown}`")));
    }
    let window = match query.get("window_secs") {
        None => state.store.current().slis.window_secs,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(w) if (1..=MAX_WINDOW_SECS).contains(&w) => w,
            Ok(_) => {
                return Err(ApiError::field(
                    "window_secs",
                    "range",
                    format!("must be between 1 and {MAX_WINDOW_SECS}"),
                ));
            }
            Err(_) => return Err(ApiError::field("window_secs", "type", "must be a whole number of seconds")),
        },
    };
    Ok(Json(state.stats.snapshot(window, state.engine.offered_rate(), state.engine.running())))
}
