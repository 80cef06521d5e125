//! The run loop: one task per active run. It walks the run through setup → baseline →
//! incident, applies the faults on schedule, and on every tick polls the runner's SLIs and the
//! services' config history, delivers hints and evaluates success. Every step is persisted
//! before it is announced, so a restarted orchestrator resumes from the database.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use scenario::sli::SliSnapshot;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::hub::Hub;
use crate::metrics::OrchestratorMetrics;
use crate::model::{
    ChangeSource, Completed, ConfigChange, Entry, EventMessage, Hint, HintMessage, HintTrigger, Milestone,
    MilestoneName, Outcome, RunState, SlisMessage, StateMessage, TimelineEntry, WsMessage,
};
use crate::plan::{HintWhen, Plan};
use crate::services::{self, Services};
use crate::store::{self, RunRow};

/// What every run engine shares with the API.
pub struct Shared {
    pub db: PgPool,
    pub hub: Arc<Hub>,
    pub services: Services,
    /// Evaluation period.
    pub tick: Duration,
    pub metrics: OrchestratorMetrics,
    /// The orchestrator's own `/config` (hint pacing), read on every tick.
    pub config: watch::Receiver<Arc<service_kit::config::Snapshot<crate::config::OrchestratorConfig>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("services", &self.services).field("tick", &self.tick).finish_non_exhaustive()
    }
}

pub enum Command {
    /// End the run as `abandoned` with `reason`; the reply carries the final row.
    Stop { reason: String, reply: oneshot::Sender<anyhow::Result<RunRow>> },
    /// End the run as `gave_up` (the learner asked for the solution); the reply carries the
    /// final row.
    GiveUp { by: String, reply: oneshot::Sender<anyhow::Result<RunRow>> },
}

/// Completed journeys per second below this share of the plan's offered rate mean the runner
/// cannot keep up (throttled): the load the scenario judges by is not being offered.
pub const MIN_COMPLETED_SHARE: f64 = 0.7;

/// The API's handle on the active run's task.
#[derive(Debug)]
pub struct RunHandle {
    pub id: Uuid,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl RunHandle {
    /// Whether the task still runs (a resolved or failed run's task has ended).
    pub fn is_active(&self) -> bool {
        !self.task.is_finished()
    }

    /// Waits for the task to end (after shutdown was signalled).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// Asks the task to abandon the run and waits until it did. `None` if the task had
    /// already ended.
    pub async fn stop(self, reason: String) -> Option<anyhow::Result<RunRow>> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Stop { reason, reply }).await.ok()?;
        let result = answer.await.ok();
        let _ = self.task.await;
        result
    }

    /// Asks the task to end the run as given up and waits until it did. `None` if the task
    /// had already ended.
    pub async fn give_up(self, by: String) -> Option<anyhow::Result<RunRow>> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::GiveUp { by, reply }).await.ok()?;
        let result = answer.await.ok();
        let _ = self.task.await;
        result
    }
}

/// Starts the task of `run`. `history` is its timeline so far: applied faults, delivered hints
/// and seen config changes are taken from it and never repeated. `resumed` says the run was
/// left active by a previous orchestrator.
/// The task ends when the run ends, or without touching the run when `shutdown` flips or
/// its sender goes (the orchestrator stopping: the next one resumes the run).
pub fn spawn(
    shared: Arc<Shared>,
    run: RunRow,
    plan: Plan,
    history: &[TimelineEntry],
    resumed: bool,
    shutdown: watch::Receiver<bool>,
) -> RunHandle {
    let id = run.id;
    let (tx, rx) = mpsc::channel(4);
    let engine = Engine::new(shared, run, plan, history);
    let task = tokio::spawn(engine.run(rx, shutdown, resumed));
    RunHandle { id, commands: tx, task }
}

fn after(t: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
    // Scenario durations are at most a day, far inside TimeDelta's range.
    t + TimeDelta::milliseconds((secs * 1000.0).round() as i64)
}

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// JSON equality where `2` and `2.0` are the same number (a config normalises numbers its own
/// way).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

struct Engine {
    shared: Arc<Shared>,
    run: RunRow,
    plan: Plan,
    next_seq: i32,
    applied: BTreeSet<usize>,
    /// When the last fault was applied: success is only considered after it.
    last_fault_at: Option<DateTime<Utc>>,
    delivered: BTreeSet<usize>,
    /// Since when each condition hint's `when` has held without a break.
    hint_since: HashMap<usize, DateTime<Utc>>,
    /// A success condition was seen failing after the last fault.
    observed: bool,
    /// Highest config revision recorded per service; absent = record what changed since the
    /// run started.
    seen_revision: HashMap<String, u64>,
    /// Every config change seen during the run, for the incident review.
    changes: Vec<ConfigChange>,
    /// When each delivered hint went out.
    hint_times: Vec<DateTime<Utc>>,
    /// Why the offered load is not the plan's right now (`None`: it is).
    load_problem: Option<String>,
    slis: Option<SliSnapshot>,
    ended: bool,
}

impl Engine {
    fn new(shared: Arc<Shared>, run: RunRow, plan: Plan, history: &[TimelineEntry]) -> Self {
        let mut engine = Self {
            shared,
            run,
            plan,
            next_seq: 1,
            applied: BTreeSet::new(),
            last_fault_at: None,
            delivered: BTreeSet::new(),
            hint_since: HashMap::new(),
            observed: false,
            seen_revision: HashMap::new(),
            changes: Vec::new(),
            hint_times: Vec::new(),
            load_problem: None,
            slis: None,
            ended: false,
        };
        for item in history {
            engine.next_seq = engine.next_seq.max(item.seq + 1);
            match &item.entry {
                Entry::Milestone(m) if m.milestone == MilestoneName::FaultApplied => {
                    if let Some(index) = m.fault {
                        engine.applied.insert(index);
                        engine.last_fault_at = Some(item.at);
                    }
                }
                Entry::Milestone(m) if m.milestone == MilestoneName::IncidentObserved => engine.observed = true,
                Entry::Milestone(m) if m.milestone == MilestoneName::LoadBelowPlan => {
                    engine.load_problem = Some(m.note.clone().unwrap_or_default());
                }
                Entry::Milestone(m) if m.milestone == MilestoneName::LoadRestored => engine.load_problem = None,
                Entry::Hint(hint) => {
                    engine.delivered.insert(hint.index);
                    engine.hint_times.push(item.at);
                }
                Entry::ConfigChange(change) => engine.note_change(change),
                _ => {}
            }
        }
        engine
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>, resumed: bool) {
        let run_id = self.run.id;
        if resumed {
            tracing::info!(%run_id, state = %self.run.state(), "resuming the active run");
            if let Err(err) = self.milestone(Milestone::new(MilestoneName::Resumed)).await {
                tracing::warn!(%run_id, error = format!("{err:#}"), "cannot record the resume");
            }
        }
        self.shared.hub.publish(&WsMessage::State(self.state_message()));
        self.shared.metrics.active_run.set(1);
        self.drive(&mut commands, &mut shutdown).await;
        self.shared.metrics.active_run.set(0);
    }

    async fn drive(&mut self, commands: &mut mpsc::Receiver<Command>, shutdown: &mut watch::Receiver<bool>) {
        let run_id = self.run.id;
        let mut ticks = tokio::time::interval(self.shared.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(%run_id, "orchestrator stopping; the run stays active for the next one");
                        return;
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Stop { reason, reply }) => {
                        let result = self.abandon(&reason).await.map(|()| self.run.clone());
                        let _ = reply.send(result);
                        return;
                    }
                    Some(Command::GiveUp { by, reply }) => {
                        let result = self.give_up(&by).await.map(|()| self.run.clone());
                        let _ = reply.send(result);
                        return;
                    }
                    None => return,
                },
                _ = ticks.tick() => {
                    if let Err(err) = self.step().await {
                        tracing::warn!(%run_id, error = format!("{err:#}"), "run step failed; retrying next tick");
                    }
                    if self.ended {
                        return;
                    }
                }
            }
        }
    }

    fn state_message(&self) -> StateMessage {
        StateMessage { state: Some(self.run.state()), run: Some(self.run.summary()) }
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        match self.run.state() {
            RunState::Setup => self.setup().await,
            RunState::Baseline => {
                self.poll_config().await;
                self.poll_slis().await;
                let baseline_at = self.run.baseline_at.unwrap_or(self.run.started_at);
                if Utc::now() >= after(baseline_at, self.plan.baseline_secs) {
                    self.run.incident_at = Some(Utc::now());
                    self.set_state(RunState::Incident).await?;
                    self.milestone(Milestone::new(MilestoneName::IncidentStarted)).await?;
                    self.apply_due_faults().await?;
                }
                Ok(())
            }
            RunState::Incident | RunState::Recovering => {
                self.apply_due_faults().await?;
                self.poll_config().await;
                self.poll_slis().await;
                self.deliver_hints().await?;
                self.evaluate_success().await
            }
            RunState::Resolved | RunState::Abandoned | RunState::GaveUp => {
                self.ended = true;
                Ok(())
            }
        }
    }

    /// Resets every observed service to its defaults and starts the runner's load.
    async fn setup(&mut self) -> anyhow::Result<()> {
        let services = &self.shared.services;
        let mut failures = Vec::new();
        for service in services.observed() {
            if let Err(err) = services.reset_config(service).await {
                failures.push(err.to_string());
            }
        }
        if let Err(err) = services.start_load(&self.plan.load).await {
            failures.push(err.to_string());
        }
        if !failures.is_empty() {
            let reason = format!("setup failed: {}", failures.join("; "));
            return self.abandon(&reason).await;
        }
        self.run.baseline_at = Some(Utc::now());
        self.set_state(RunState::Baseline).await?;
        self.milestone(Milestone::new(MilestoneName::BaselineStarted)).await
    }

    async fn apply_due_faults(&mut self) -> anyhow::Result<()> {
        let Some(incident_at) = self.run.incident_at else { return Ok(()) };
        let now = Utc::now();
        let mut applied_any = false;
        for (index, fault) in self.plan.faults.clone().into_iter().enumerate() {
            if self.applied.contains(&index) || now < after(incident_at, fault.at_secs) {
                continue;
            }
            if let Err(err) = self.shared.services.patch_config(&fault.service, &fault.patch).await {
                tracing::warn!(run_id = %self.run.id, fault = index, error = %err, "cannot apply a fault; retrying");
                continue;
            }
            self.applied.insert(index);
            applied_any = true;
            self.last_fault_at = Some(Utc::now());
            let mut milestone = Milestone::new(MilestoneName::FaultApplied).with_note(fault.note.clone());
            milestone.service = Some(fault.service.clone());
            milestone.fault = Some(index);
            self.milestone(milestone).await?;
        }
        if applied_any {
            // The change a fault made shows up on the timeline right after its milestone.
            self.poll_config().await;
        }
        Ok(())
    }

    fn note_change(&mut self, change: &ConfigChange) {
        let seen = self.seen_revision.entry(change.service.clone()).or_insert(0);
        *seen = (*seen).max(change.revision);
        self.changes.push(change.clone());
    }

    /// Records every config change made since the last poll, on every observed service.
    async fn poll_config(&mut self) {
        let services: Vec<String> = self.shared.services.observed().map(str::to_owned).collect();
        for service in services {
            let entries = match self.shared.services.history(&service).await {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::debug!(run_id = %self.run.id, error = %err, "cannot read config history");
                    continue;
                }
            };
            let newest = entries.last().map_or(0, |e| e.revision);
            let seen = match self.seen_revision.get(&service) {
                // The service restarted: its revisions began again.
                Some(&seen) if newest < seen => None,
                other => other.copied(),
            };
            for entry in entries {
                let new = match seen {
                    Some(seen) => entry.revision > seen,
                    None => entry.at >= self.run.started_at,
                };
                if !new {
                    continue;
                }
                let source =
                    if entry.actor == services::SUBJECT { ChangeSource::Scenario } else { ChangeSource::Learner };
                for field in &entry.changes {
                    let change = ConfigChange {
                        service: service.clone(),
                        revision: entry.revision,
                        field: field.field.clone(),
                        old: field.old.clone(),
                        new: field.new.clone(),
                        actor: entry.actor.clone(),
                        role: entry.role,
                        source,
                        action: entry.action,
                        client: entry.client.clone(),
                        through: entry.through.clone(),
                        changed_at: entry.at,
                    };
                    if let Err(err) = self.record(Entry::ConfigChange(change.clone())).await {
                        tracing::warn!(run_id = %self.run.id, error = format!("{err:#}"), "cannot record a config change");
                        return;
                    }
                    self.note_change(&change);
                }
                // A change with no field changes still moves the mark.
                self.seen_revision.insert(service.clone(), entry.revision);
            }
            if seen.is_none() && !self.seen_revision.contains_key(&service) {
                self.seen_revision.insert(service.clone(), newest);
            }
        }
    }

    async fn poll_slis(&mut self) {
        match self.shared.services.slis(services::sli_window_secs(self.plan.time_scale)).await {
            Ok(snapshot) => {
                self.shared
                    .hub
                    .publish(&WsMessage::Slis(SlisMessage { run_id: Some(self.run.id), snapshot: snapshot.clone() }));
                self.slis = Some(snapshot);
            }
            Err(err) => {
                tracing::debug!(run_id = %self.run.id, error = %err, "cannot read the runner's SLIs");
                // Stale SLIs must not keep a success window alive.
                self.slis = None;
            }
        }
    }

    async fn deliver_hints(&mut self) -> anyhow::Result<()> {
        let Some(incident_at) = self.run.incident_at else { return Ok(()) };
        let now = Utc::now();
        let pacing = self.shared.config.borrow().hints.clone();
        if !pacing.enabled {
            return Ok(());
        }
        let min_interval = f64::from(pacing.min_interval_secs) * self.plan.time_scale;
        for (index, hint) in self.plan.hints.clone().into_iter().enumerate() {
            if self.delivered.contains(&index) {
                continue;
            }

            let trigger = match &hint.trigger {
                HintWhen::After(secs) => (now >= after(incident_at, *secs)).then_some(HintTrigger::Time),
                HintWhen::Holds(condition, for_secs) => {
                    if condition.holds(self.slis.as_ref()) == Some(true) {
                        let since = *self.hint_since.entry(index).or_insert(now);
                        (now >= after(since, *for_secs)).then_some(HintTrigger::Condition)
                    } else {
                        self.hint_since.remove(&index);
                        None
                    }
                }
            };
            let Some(trigger) = trigger else { continue };
            if self.hint_times.last().is_some_and(|last| now < after(*last, min_interval)) {
                // Paced: a due hint waits for the interval (its `when` timer kept running above).
                continue;
            }
            let hint = Hint { index, text: hint.text.clone(), trigger };
            let item = self.record(Entry::Hint(hint.clone())).await?;
            self.delivered.insert(index);
            self.hint_times.push(item.at);
            self.shared.hub.publish(&WsMessage::Hint(HintMessage { run_id: self.run.id, at: item.at, hint }));
        }
        Ok(())
    }

    /// The first config predicate that does not hold now (unreadable config counts as not
    /// holding), as text for the timeline.
    async fn failing_predicate(&self) -> Option<String> {
        let mut configs: HashMap<&str, serde_json::Value> = HashMap::new();
        for predicate in &self.plan.config {
            if !configs.contains_key(predicate.service.as_str()) {
                match self.shared.services.config_values(&predicate.service).await {
                    Ok(values) => {
                        configs.insert(&predicate.service, values);
                    }
                    Err(err) => {
                        tracing::debug!(run_id = %self.run.id, error = %err, "cannot read a config for a predicate");
                        return Some(format!("{}: config unreadable", predicate.service));
                    }
                }
            }
            let holds = configs.get(predicate.service.as_str()).is_some_and(|values| (predicate.check)(values));
            if !holds {
                return Some(format!("{predicate:?}"));
            }
        }
        None
    }

    /// Why the offered load is not the scenario's plan now, or `None` when it is: the runner's
    /// config must be the plan (switched on, the same load), its SLIs must say it runs, and,
    /// once the SLIs otherwise say healthy, completed journeys must keep up with what it
    /// offers (a throttled runner offers less than it planned).
    async fn load_problem(&self, healthy: bool) -> Option<String> {
        match self.shared.services.runner_config().await {
            Ok(config) => {
                if config.get("enabled") != Some(&Value::Bool(true)) {
                    return Some("the runner is switched off".to_owned());
                }
                if !same_json(config.get("load").unwrap_or(&Value::Null), &self.plan.load) {
                    return Some("the runner's load plan is not the scenario's".to_owned());
                }
            }
            Err(err) => return Some(format!("the runner's config cannot be read ({err})")),
        }
        let slis = self.slis.as_ref()?;
        if !slis.running {
            return Some("the runner offers no load".to_owned());
        }
        if healthy && slis.offered_rps > 0.0 && slis.all.rps < MIN_COMPLETED_SHARE * slis.offered_rps {
            return Some(format!(
                "{:.1} journeys/s completed, under {:.0} % of the {:.1}/s the plan offers: the runner cannot keep up",
                slis.all.rps,
                MIN_COMPLETED_SHARE * 100.0,
                slis.offered_rps
            ));
        }
        None
    }

    /// Records the load falling below the plan, or coming back, once per change.
    async fn note_load(&mut self, problem: Option<String>) -> anyhow::Result<()> {
        match (&self.load_problem, &problem) {
            (None, Some(why)) => {
                self.milestone(Milestone::new(MilestoneName::LoadBelowPlan).with_note(why.clone())).await?;
            }
            (Some(_), None) => self.milestone(Milestone::new(MilestoneName::LoadRestored)).await?,
            _ => {}
        }
        self.load_problem = problem;
        Ok(())
    }

    /// Success is judged only once every fault is applied and the incident was observed: a
    /// success condition failed on the SLIs, or a config predicate failed on the services'
    /// config (the fault's own change is evidence). Otherwise SLIs still healthy from before a
    /// fault bites would let "doing nothing" win. And it is judged under the scenario's load
    /// only: while the offered load is below the plan, the run cannot complete.
    async fn evaluate_success(&mut self) -> anyhow::Result<()> {
        if self.applied.len() < self.plan.faults.len() {
            return Ok(());
        }
        let failing_condition =
            self.plan.conditions.iter().find(|c| c.holds(self.slis.as_ref()) != Some(true)).cloned();
        let failing_predicate = self.failing_predicate().await;
        let healthy = failing_condition.is_none() && failing_predicate.is_none();
        let load_problem = self.load_problem(healthy).await;
        self.note_load(load_problem.clone()).await?;
        if !self.observed {
            // Only a snapshot taken after the last fault counts as seeing it.
            let fresh = self.slis.as_ref().filter(|s| self.last_fault_at.is_none_or(|t| s.at > t));
            let seen_failing = self.plan.conditions.iter().find(|c| c.holds(fresh) == Some(false));
            let note = match (seen_failing, &failing_predicate) {
                (Some(condition), _) => format!("`{}` does not hold", condition.text),
                (None, Some(predicate)) => format!("`{predicate}` does not hold"),
                (None, None) => return Ok(()),
            };
            self.observed = true;
            self.milestone(Milestone::new(MilestoneName::IncidentObserved).with_note(note)).await?;
            return Ok(());
        }
        let holds = healthy && load_problem.is_none();
        let now = Utc::now();
        match (self.run.state(), holds) {
            (RunState::Incident, true) => {
                self.run.recovering_at = Some(now);
                self.set_state(RunState::Recovering).await?;
                if self.plan.window_secs <= 0.0 {
                    self.finish(Outcome::Resolved).await?;
                }
            }
            (RunState::Recovering, false) => {
                self.run.recovering_at = None;
                self.set_state(RunState::Incident).await?;
            }
            (RunState::Recovering, true) => {
                let since = self.run.recovering_at.unwrap_or(now);
                if now >= after(since, self.plan.window_secs) {
                    self.finish(Outcome::Resolved).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The debrief of the run as it ends now with `outcome`: the incident review of the
    /// learner's changes and the times.
    fn debrief(&self, outcome: Outcome, now: DateTime<Utc>) -> Completed {
        let incident_at = self.run.incident_at.unwrap_or(self.run.started_at);
        let review = crate::grading::review(
            &self.changes,
            &self.plan.cause,
            &self.plan.fix,
            self.run.started_at,
            incident_at,
            outcome == Outcome::Resolved,
        );
        let hints_before_detect = review.detected_at.map(|t| self.hint_times.iter().filter(|h| **h < t).count());
        Completed {
            run_id: self.run.id,
            scenario_id: self.plan.id.clone(),
            outcome,
            grade: review.grade,
            grade_note: review.note,
            cause: self.plan.cause.clone(),
            changes: review.changes,
            time_to_detect_secs: review.detected_at.map(|t| secs_between(incident_at, t)),
            hints_before_detect,
            time_to_mitigate_secs: match outcome {
                Outcome::Resolved => self.run.recovering_at.map(|t| secs_between(incident_at, t)),
                Outcome::GaveUp => None,
            },
            time_to_repair_secs: secs_between(incident_at, now),
            hints_used: self.delivered.len(),
            hints_total: self.plan.hints.len(),
            debrief: self.plan.debrief.clone(),
            solution: self.plan.solution.clone(),
        }
    }

    /// Ends the run with its debrief: `resolved` (the system healed) or `gave_up` (the
    /// learner asked for the solution; load off and services reset, as for a stop).
    async fn finish(&mut self, outcome: Outcome) -> anyhow::Result<()> {
        let now = Utc::now();
        let completed = self.debrief(outcome, now);
        if let Err(err) = self.shared.services.stop_load().await {
            tracing::warn!(run_id = %self.run.id, error = %err, "cannot stop the runner's load");
        }
        if outcome == Outcome::GaveUp {
            self.reset_services().await;
        }
        let (state, milestone, label) = match outcome {
            Outcome::Resolved => (RunState::Resolved, MilestoneName::Resolved, "resolved"),
            Outcome::GaveUp => (RunState::GaveUp, MilestoneName::GaveUp, "gave_up"),
        };
        self.run.ended_at = Some(now);
        self.run.result = Some(serde_json::to_value(&completed)?);
        self.set_state(state).await?;
        self.milestone(Milestone::new(milestone)).await?;
        self.record(Entry::Completed(completed.clone())).await?;
        self.shared.hub.publish(&WsMessage::Completed(completed));
        self.ended = true;
        self.shared.metrics.runs.with_label_values(&[label]).inc();
        tracing::info!(run_id = %self.run.id, scenario = %self.plan.id, outcome = label, "run ended with a debrief");
        Ok(())
    }

    /// The learner gave up: the latest changes go on the record first, so the review has them.
    async fn give_up(&mut self, by: &str) -> anyhow::Result<()> {
        self.poll_config().await;
        tracing::info!(run_id = %self.run.id, by, "the learner gave up");
        self.finish(Outcome::GaveUp).await
    }

    async fn reset_services(&self) {
        let services = &self.shared.services;
        for service in services.observed() {
            if let Err(err) = services.reset_config(service).await {
                tracing::warn!(run_id = %self.run.id, error = %err, "cannot reset a service's config");
            }
        }
    }

    /// Ends the run as `abandoned`: load off, every observed service back to its defaults.
    async fn abandon(&mut self, reason: &str) -> anyhow::Result<()> {
        let services = &self.shared.services;
        if let Err(err) = services.stop_load().await {
            tracing::warn!(run_id = %self.run.id, error = %err, "cannot stop the runner's load");
        }
        self.reset_services().await;
        self.run.ended_at = Some(Utc::now());
        self.run.end_reason = Some(reason.to_owned());
        self.set_state(RunState::Abandoned).await?;
        self.milestone(Milestone::new(MilestoneName::Abandoned).with_note(reason)).await?;
        self.ended = true;
        self.shared.metrics.runs.with_label_values(&["abandoned"]).inc();
        tracing::info!(run_id = %self.run.id, scenario = %self.plan.id, reason, "run abandoned");
        Ok(())
    }

    async fn set_state(&mut self, state: RunState) -> anyhow::Result<()> {
        let previous = std::mem::replace(&mut self.run.state, state.as_str().to_owned());
        if let Err(err) = store::save_run(&self.shared.db, &self.run).await {
            // Not persisted, not happened: the next tick decides again.
            self.run.state = previous;
            return Err(err.into());
        }
        self.record(Entry::State { state }).await?;
        self.shared.hub.publish(&WsMessage::State(self.state_message()));
        Ok(())
    }

    async fn milestone(&mut self, milestone: Milestone) -> anyhow::Result<()> {
        self.record(Entry::Milestone(milestone)).await.map(drop)
    }

    /// Persists `entry` as the run's next timeline entry; milestones and config changes are
    /// also pushed as `event` messages.
    async fn record(&mut self, entry: Entry) -> anyhow::Result<TimelineEntry> {
        let item = TimelineEntry { seq: self.next_seq, at: Utc::now(), entry };
        store::append_event(&self.shared.db, self.run.id, &item).await?;
        self.next_seq += 1;
        if matches!(item.entry, Entry::Milestone(_) | Entry::ConfigChange(_)) {
            self.shared.hub.publish(&WsMessage::Event(EventMessage { run_id: self.run.id, entry: item.clone() }));
        }
        Ok(item)
    }
}
