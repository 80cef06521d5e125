//! Run lifecycle decisions: start (one active run at a time), stop, reset, and resuming the
//! active run a previous orchestrator left in the database.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use service_kit::{ApiError, Caller};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::model::{Entry, Milestone, MilestoneName, RunState, StateMessage, TimelineEntry, WsMessage};
use crate::plan::Plan;
use crate::run_loop::{self, RunHandle, Shared};
use crate::store::{self, InsertError, RunRow};

pub struct Orchestrator {
    pub shared: Arc<Shared>,
    pub catalog: Catalog,
    /// The active run's task. Held across start/stop/reset so they never interleave.
    active: Mutex<Option<RunHandle>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("scenarios", &self.catalog.len()).finish_non_exhaustive()
    }
}

/// What `POST /api/reset` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResetReport {
    /// The run that was abandoned, if one was active.
    pub stopped_run: Option<Uuid>,
    /// Services whose `/config` is back at its defaults (the runner's load is off).
    pub reset: Vec<String>,
    /// Services that could not be reset, with why.
    pub failed: Vec<ServiceFailure>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceFailure {
    pub service: String,
    pub message: String,
}

fn internal(err: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(err.into())
}

impl Orchestrator {
    pub fn new(shared: Arc<Shared>, catalog: Catalog, shutdown: watch::Receiver<bool>) -> Self {
        Self { shared, catalog, active: Mutex::new(None), shutdown }
    }

    /// Starts a run of `scenario_id`. 404 for an unknown scenario, 409 while a run is active.
    pub async fn start(&self, caller: &Caller, scenario_id: &str, time_scale: f64) -> Result<RunRow, ApiError> {
        let scenario =
            self.catalog.get(scenario_id).ok_or_else(|| ApiError::NotFound(format!("no scenario `{scenario_id}`")))?;
        let plan =
            Plan::new(&scenario, time_scale).map_err(|e| ApiError::field("time_scale", "range", e.to_string()))?;
        if let Some(missing) = plan.faults.iter().map(|f| f.service.as_str()).find(|s| !self.shared.services.knows(s)) {
            return Err(ApiError::Conflict(format!(
                "scenario `{scenario_id}` patches service `{missing}`, which this orchestrator was not given (--service)"
            )));
        }
        let mut active = self.active.lock().await;
        if let Some(handle) = active.as_ref().filter(|h| h.is_active()) {
            return Err(ApiError::Conflict(format!("run {} is active; stop it first", handle.id)));
        }
        let run = RunRow {
            id: Uuid::now_v7(),
            scenario_id: scenario.id.clone(),
            scenario: crate::catalog::full_view(&scenario),
            params: json!({ "time_scale": time_scale }),
            state: RunState::Setup.as_str().to_owned(),
            started_by: caller.subject.clone(),
            started_by_role: caller.role.to_string(),
            started_at: Utc::now(),
            baseline_at: None,
            incident_at: None,
            recovering_at: None,
            ended_at: None,
            end_reason: None,
            result: None,
        };
        match store::insert_run(&self.shared.db, &run).await {
            Ok(()) => {}
            Err(InsertError::Active) => {
                return Err(ApiError::Conflict("a run is already active; stop it first".into()));
            }
            Err(InsertError::Db(err)) => return Err(internal(err)),
        }
        let first = TimelineEntry { seq: 1, at: run.started_at, entry: Entry::State { state: RunState::Setup } };
        store::append_event(&self.shared.db, run.id, &first).await.map_err(internal)?;
        self.shared.metrics.runs.with_label_values(&["started"]).inc();
        tracing::info!(run_id = %run.id, scenario = %run.scenario_id, time_scale, by = %caller.subject, "run started");
        *active = Some(run_loop::spawn(self.shared.clone(), run.clone(), plan, &[first], false, self.shutdown.clone()));
        Ok(run)
    }

    /// Abandons the active run. 404 when none is active.
    pub async fn stop(&self, caller: &Caller) -> Result<RunRow, ApiError> {
        let mut active = self.active.lock().await;
        let handle = active.take().filter(RunHandle::is_active);
        let Some(handle) = handle else {
            return Err(ApiError::NotFound("no run is active".into()));
        };
        let reason = format!("stopped by {} ({})", caller.subject, caller.role);
        match handle.stop(reason).await {
            Some(result) => result.map_err(internal),
            None => Err(ApiError::NotFound("no run is active".into())),
        }
    }

    /// Ends the active run as given up: the learner asked for the solution, which the debrief
    /// then shows (graded as given up). 404 when none is active.
    pub async fn give_up(&self, caller: &Caller) -> Result<RunRow, ApiError> {
        let mut active = self.active.lock().await;
        let handle = active.take().filter(RunHandle::is_active);
        let Some(handle) = handle else {
            return Err(ApiError::NotFound("no run is active".into()));
        };
        let by = format!("{} ({})", caller.subject, caller.role);
        match handle.give_up(by).await {
            Some(result) => result.map_err(internal),
            None => Err(ApiError::NotFound("no run is active".into())),
        }
    }

    /// Abandons any active run, then puts every service's `/config` back to its defaults
    /// (which also switches the runner's load off).
    pub async fn reset(&self, caller: &Caller) -> Result<ResetReport, ApiError> {
        let mut active = self.active.lock().await;
        let mut stopped_run = None;
        if let Some(handle) = active.take().filter(RunHandle::is_active) {
            let reason = format!("reset by {} ({})", caller.subject, caller.role);
            if let Some(result) = handle.stop(reason).await {
                stopped_run = Some(result.map_err(internal)?.id);
            }
        }
        let services = &self.shared.services;
        let mut reset = Vec::new();
        let mut failed = Vec::new();
        for service in services.names() {
            match services.reset_config(service).await {
                Ok(_) => reset.push(service.to_owned()),
                Err(err) => failed.push(ServiceFailure { service: service.to_owned(), message: err.message }),
            }
        }
        tracing::info!(by = %caller.subject, ?stopped_run, ?reset, failed = failed.len(), "stack reset");
        Ok(ResetReport { stopped_run, reset, failed })
    }

    /// Picks up the run a previous orchestrator left active: resumed from its timeline, or
    /// ended as `abandoned` when its scenario is no longer in the catalog.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let Some(mut run) = store::active_run(&self.shared.db).await? else {
            self.shared.hub.publish(&WsMessage::State(StateMessage { state: None, run: None }));
            return Ok(());
        };
        let history = store::events(&self.shared.db, run.id).await?;
        let plan = self.catalog.get(&run.scenario_id).map(|s| Plan::new(&s, run.time_scale()));
        match plan {
            Some(Ok(plan)) => {
                *self.active.lock().await =
                    Some(run_loop::spawn(self.shared.clone(), run, plan, &history, true, self.shutdown.clone()));
            }
            other => {
                let reason = match other {
                    Some(Err(err)) => format!("cannot resume after a restart: {err}"),
                    _ => format!(
                        "cannot resume after a restart: scenario `{}` is no longer in the catalog",
                        run.scenario_id
                    ),
                };
                tracing::warn!(run_id = %run.id, reason, "abandoning the active run");
                let services = &self.shared.services;
                if let Err(err) = services.stop_load().await {
                    tracing::warn!(error = %err, "cannot stop the runner's load");
                }
                for service in services.observed() {
                    if let Err(err) = services.reset_config(service).await {
                        tracing::warn!(error = %err, "cannot reset a service's config");
                    }
                }
                let now = Utc::now();
                run.state = RunState::Abandoned.as_str().to_owned();
                run.ended_at = Some(now);
                run.end_reason = Some(reason.clone());
                store::save_run(&self.shared.db, &run).await?;
                self.shared.metrics.runs.with_label_values(&["abandoned"]).inc();
                let next = history.last().map_or(1, |e| e.seq + 1);
                let entries = [
                    Entry::State { state: RunState::Abandoned },
                    Entry::Milestone(Milestone::new(MilestoneName::Abandoned).with_note(reason)),
                ];
                for (seq, entry) in (next..).zip(entries) {
                    store::append_event(&self.shared.db, run.id, &TimelineEntry { seq, at: now, entry }).await?;
                }
                self.shared
                    .hub
                    .publish(&WsMessage::State(StateMessage { state: Some(run.state()), run: Some(run.summary()) }));
            }
        }
        Ok(())
    }

    /// Flips to `true` when the orchestrator begins to shut down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The active run's id, if any.
    pub async fn active_id(&self) -> Option<Uuid> {
        self.active.lock().await.as_ref().filter(|h| h.is_active()).map(|h| h.id)
    }

    /// Waits for the active run's task to notice shutdown.
    pub async fn wait_stopped(&self) {
        if let Some(handle) = self.active.lock().await.take() {
            handle.join().await;
        }
    }
}
