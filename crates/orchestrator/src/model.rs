//! The orchestrator's vocabulary on the wire and in the database: run states, run summaries,
//! timeline entries, and the typed WebSocket messages consoles receive.

use chrono::{DateTime, Utc};
use scenario::sli::SliSnapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::Role;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a run is in its life. `resolved`, `gave_up` and `abandoned` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Services are being reset to defaults and the runner's load is being switched on.
    Setup,
    /// Healthy load, no fault yet.
    Baseline,
    /// Faults are applied (or due); success conditions do not all hold.
    Incident,
    /// Every success condition holds, but not yet for the scenario's whole window.
    Recovering,
    /// The learner repaired the system: success held for the whole window.
    Resolved,
    /// Stopped, reset, or ended because it could not go on. Reveals nothing.
    Abandoned,
    /// The learner gave up: the solution and debrief are shown, graded as such.
    GaveUp,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Baseline => "baseline",
            Self::Incident => "incident",
            Self::Recovering => "recovering",
            Self::Resolved => "resolved",
            Self::Abandoned => "abandoned",
            Self::GaveUp => "gave_up",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Setup, Self::Baseline, Self::Incident, Self::Recovering, Self::Resolved, Self::Abandoned, Self::GaveUp]
            .into_iter()
            .find(|state| state.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Resolved | Self::Abandoned | Self::GaveUp)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as lists and `state` messages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub scenario_id: String,
    pub scenario_title: String,
    pub state: RunState,
    /// Multiplies every duration of the scenario (1.0 = as written).
    pub time_scale: f64,
    /// Subject of the token that started the run.
    pub started_by: String,
    pub started_by_role: Role,
    pub started_at: DateTime<Utc>,
    pub baseline_at: Option<DateTime<Utc>>,
    pub incident_at: Option<DateTime<Utc>>,
    /// When the success conditions last started to hold (set while `recovering`).
    pub recovering_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why an abandoned run ended.
    pub end_reason: Option<String>,
    /// The debrief of a resolved or given-up run.
    pub result: Option<Completed>,
}

/// A run with its whole timeline (`GET /api/runs/{id}`, `GET /api/runs/current`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub events: Vec<TimelineEntry>,
}

/// One persisted entry of a run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// 1, 2, 3… within the run.
    pub seq: i32,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub entry: Entry,
}

/// What happened, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// The run entered a state.
    State { state: RunState },
    /// A step of the scenario: a phase began, a fault was applied, the incident was observed.
    Milestone(Milestone),
    /// A `/config` change seen on a service, whoever made it.
    ConfigChange(ConfigChange),
    /// A hint was delivered.
    Hint(Hint),
    /// The run was resolved or given up: the debrief.
    Completed(Completed),
}

impl Entry {
    /// The `kind` column of `run_events`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::State { .. } => "state",
            Self::Milestone(_) => "milestone",
            Self::ConfigChange(_) => "config_change",
            Self::Hint(_) => "hint",
            Self::Completed(_) => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneName {
    BaselineStarted,
    IncidentStarted,
    /// One of the scenario's faults was applied (`fault` = its index, `service`, `note`).
    FaultApplied,
    /// A success condition was seen failing after the last fault: users are affected.
    IncidentObserved,
    /// The orchestrator restarted and picked the run up again.
    Resumed,
    /// The offered load fell below the scenario's plan (`note` says how): the run cannot
    /// complete until it is back.
    LoadBelowPlan,
    /// The offered load is the plan's again.
    LoadRestored,
    Resolved,
    Abandoned,
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Milestone {
    pub milestone: MilestoneName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Index of the fault in the scenario's `faults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
}

impl Milestone {
    pub fn new(milestone: MilestoneName) -> Self {
        Self { milestone, note: None, service: None, fault: None }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Who a config change is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// Made by the orchestrator: a fault, or a reset to defaults.
    Scenario,
    /// Made by anyone else: the learner operating the system.
    Learner,
}

/// How a `/config` change was made: `PATCH`, `PUT` (the whole document) or `DELETE` (back to
/// the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    #[default]
    Patch,
    Put,
    Reset,
}

/// One changed field of one `/config` change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigChange {
    pub service: String,
    /// The service's config revision the change produced.
    pub revision: u64,
    /// Dotted path, e.g. `release.version`.
    pub field: String,
    /// The value before (any JSON value: a string, a number, an object…).
    #[schema(value_type = Value)]
    pub old: Value,
    /// The value after.
    #[schema(value_type = Value)]
    pub new: Value,
    /// Subject of the token that made the change.
    pub actor: String,
    pub role: Role,
    pub source: ChangeSource,
    #[serde(default)]
    pub action: ChangeAction,
    /// Which client made it (`console`, `cli`, a User-Agent's product such as `curl`), as the
    /// service recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `control-gateway` when the change came through the control gateway; absent when the
    /// service was called directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// When the service accepted the change.
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HintTrigger {
    /// `after_secs` passed since the incident started.
    Time,
    /// Its `when` condition held (for `for_secs`).
    Condition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hint {
    /// Index of the hint in the scenario's `hints`.
    pub index: usize,
    pub text: String,
    pub trigger: HintTrigger,
}

/// How a run with a debrief ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The system healed and stayed healthy for the success window.
    Resolved,
    /// The learner gave up and asked for the solution.
    GaveUp,
}

/// The grade of a fix, or of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Changed what the scenario names as the cause, and little else.
    Targeted,
    /// A reset, a whole-document `PUT`, or a patch that also changed three or more fields
    /// outside the cause: it may heal, but it is not a diagnosis.
    Blanket,
    /// Changed no field of the cause.
    Wrong,
}

/// One `/config` change a learner made during the run, as the incident review lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LearnerChange {
    pub service: String,
    pub revision: u64,
    pub at: DateTime<Utc>,
    pub action: ChangeAction,
    pub actor: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    pub fields: Vec<FieldDelta>,
    pub verdict: Verdict,
}

/// One field of a change: old → new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldDelta {
    pub field: String,
    #[schema(value_type = Value)]
    pub old: Value,
    #[schema(value_type = Value)]
    pub new: Value,
}

/// The debrief of a resolved or given-up run: the `completed` message and the run's `result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Completed {
    pub run_id: Uuid,
    pub scenario_id: String,
    pub outcome: Outcome,
    /// `targeted` or `blanket` for a resolved run; `null` when the learner gave up.
    pub grade: Option<Verdict>,
    /// Why this grade; for `blanket`, what the targeted fix would have been.
    pub grade_note: String,
    /// What the scenario names as the cause.
    #[schema(value_type = Vec<Object>)]
    pub cause: Vec<scenario::Cause>,
    /// Every `/config` change the learner made during the run, oldest first.
    pub changes: Vec<LearnerChange>,
    /// Incident start → the learner's first change on a service the cause names; `null` when
    /// there was none.
    pub time_to_detect_secs: Option<f64>,
    /// Hints delivered before that first change (0: no hint was needed to find the service).
    pub hints_before_detect: Option<usize>,
    /// Incident start → the start of the recovery window that resolved the run; `null` when
    /// given up.
    pub time_to_mitigate_secs: Option<f64>,
    /// Incident start → the end of the run (resolved or given up).
    pub time_to_repair_secs: f64,
    /// Hints delivered before the run ended.
    pub hints_used: usize,
    pub hints_total: usize,
    /// The scenario's `[debrief]`: what broke, why, lessons.
    #[schema(value_type = Object)]
    pub debrief: Value,
    /// The scenario's `[solution]`.
    #[schema(value_type = Object)]
    pub solution: Value,
}

/// Messages pushed on `GET /api/ws`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsMessage {
    /// The current run and its state (`run: null` when no run was started since the
    /// orchestrator started). Sent on connect and on every state change.
    State(StateMessage),
    /// A hint for the learner. Sent on delivery; on connect, every hint of the run so far.
    Hint(HintMessage),
    /// A timeline event: a config change or a milestone.
    Event(EventMessage),
    /// The runner's latest SLI snapshot, about once per tick; latest only (a slow client
    /// skips snapshots, never ordered messages).
    Slis(SlisMessage),
    /// The run was resolved or given up: the grade, the learner's changes, time to detect,
    /// mitigate and repair, hints used, debrief and solution.
    Completed(Completed),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StateMessage {
    /// The run's state, `null` without a run.
    pub state: Option<RunState>,
    pub run: Option<RunSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HintMessage {
    pub run_id: Uuid,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub hint: Hint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventMessage {
    pub run_id: Uuid,
    #[serde(flatten)]
    pub entry: TimelineEntry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SlisMessage {
    pub run_id: Option<Uuid>,
    /// A `scenario::sli::SliSnapshot`: `at`, `window_secs`, `offered_rps`, `running`, `all`
    /// and per-journey `journeys` (completed, failed, success_ratio, p50/p95/p99_ms, rps,
    /// orders_per_minute).
    #[schema(value_type = Object)]
    pub snapshot: SliSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_tagged_by_type_and_kind() {
        let run_id = Uuid::nil();
        let at = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        let msg = WsMessage::Event(EventMessage {
            run_id,
            entry: TimelineEntry {
                seq: 3,
                at,
                entry: Entry::Milestone(Milestone::new(MilestoneName::IncidentStarted)),
            },
        });
        let json = serde_json::to_value(&msg).unwrap_or_default();
        assert_eq!(json["type"], "event");
        assert_eq!(json["kind"], "milestone");
        assert_eq!(json["milestone"], "incident_started");
        assert_eq!(json["seq"], 3);
        let back: WsMessage = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, msg);

        let hint = WsMessage::Hint(HintMessage {
            run_id,
            at,
            hint: Hint { index: 1, text: "look".into(), trigger: HintTrigger::Condition },
        });
        let json = serde_json::to_value(&hint).unwrap_or_default();
        assert_eq!(json["type"], "hint");
        assert_eq!(json["trigger"], "condition");
        assert_eq!(
            json,
            json!({"type": "hint", "run_id": run_id, "at": at, "index": 1, "text": "look", "trigger": "condition"})
        );
    }

    #[test]
    fn run_states_round_trip_their_names() {
        for state in ["setup", "baseline", "incident", "recovering", "resolved", "abandoned", "gave_up"] {
            assert_eq!(RunState::parse(state).map(RunState::as_str), Some(state));
        }
        assert!(RunState::Resolved.is_final() && !RunState::Recovering.is_final());
    }
}
