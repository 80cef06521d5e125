//! A scenario as the run engine executes it: every duration already multiplied by the run's
//! `time_scale`, conditions and config predicates ready to evaluate. The only module that
//! knows the scenario crate's model in detail.

use std::sync::Arc;

use scenario::sli::SliSnapshot;
use serde_json::Value;

/// A condition on observed SLIs; `None` = not known (no traffic), which never counts as holding.
pub type SliCheck = Arc<dyn Fn(&SliSnapshot) -> Option<bool> + Send + Sync>;
/// A predicate on a service's live config values.
pub type ValueCheck = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Condition {
    /// As written, e.g. `checkout.error_ratio > 0.05`.
    pub text: String,
    pub check: SliCheck,
}

impl Condition {
    pub fn holds(&self, slis: Option<&SliSnapshot>) -> Option<bool> {
        slis.and_then(|s| (self.check)(s))
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub service: String,
    /// Seconds after the incident started (scaled).
    pub at_secs: f64,
    pub patch: Value,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Hint {
    pub text: String,
    pub trigger: HintWhen,
}

#[derive(Debug, Clone)]
pub enum HintWhen {
    /// Seconds after the incident started (scaled).
    After(f64),
    /// When the condition has held for this many seconds (scaled).
    Holds(Condition, f64),
}

#[derive(Clone)]
pub struct ConfigPredicate {
    pub service: String,
    /// Dotted path into the service's config values.
    pub field: String,
    /// As written, e.g. `not_equal = "2.4.1"`.
    pub text: String,
    pub check: ValueCheck,
}

impl std::fmt::Debug for ConfigPredicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.service, self.field, self.text)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub title: String,
    pub time_scale: f64,
    /// Seconds of healthy load before the incident (scaled).
    pub baseline_secs: f64,
    /// The runner's `load` (a `scenario::load::LoadSpec`).
    pub load: Value,
    pub faults: Vec<Fault>,
    pub hints: Vec<Hint>,
    /// How long success must hold (scaled).
    pub window_secs: f64,
    pub conditions: Vec<Condition>,
    pub config: Vec<ConfigPredicate>,
    /// What the scenario names as the cause: grading compares the learner's changes with it.
    pub cause: Vec<scenario::Cause>,
    /// The solution's patches: the targeted fix a blanket grade points to.
    pub fix: Vec<scenario::ServicePatch>,
    pub solution: Value,
    pub debrief: Value,
}

impl Plan {
    /// The plan of `scenario` run at `time_scale` (already validated by the caller's 400).
    pub fn new(scenario: &scenario::model::Scenario, time_scale: f64) -> Result<Self, scenario::model::TimeScaleError> {
        let scaled = scenario.scaled(time_scale)?;
        let condition = |c: &scenario::condition::Condition| {
            let owned = *c;
            Condition { text: c.to_string(), check: Arc::new(move |s: &SliSnapshot| owned.holds(s)) }
        };
        let faults = scaled
            .faults
            .iter()
            .map(|f| Fault {
                service: f.service.clone(),
                at_secs: f.at_secs,
                patch: f.patch.clone(),
                note: f.note.clone().unwrap_or_else(|| format!("{} config changed", f.service)),
            })
            .collect();
        let hints = scaled
            .hints
            .iter()
            .map(|h| Hint {
                text: h.text.clone(),
                trigger: match &h.trigger {
                    scenario::model::HintTrigger::After { after_secs } => HintWhen::After(*after_secs),
                    scenario::model::HintTrigger::When { when, for_secs } => {
                        HintWhen::Holds(condition(when), *for_secs)
                    }
                },
            })
            .collect();
        let config = scaled
            .success
            .config
            .iter()
            .map(|p| {
                let predicate = p.clone();
                let text = match &p.expect {
                    scenario::Expectation::Equal(v) => format!("== {v}"),
                    scenario::Expectation::NotEqual(v) => format!("!= {v}"),
                    scenario::Expectation::OneOf(v) => format!("in {}", Value::Array(v.clone())),
                    scenario::Expectation::AtLeast(n) => format!(">= {n}"),
                    scenario::Expectation::AtMost(n) => format!("<= {n}"),
                };
                ConfigPredicate {
                    service: p.service.clone(),
                    field: p.field.clone(),
                    text,
                    check: Arc::new(move |config: &Value| predicate.holds(config)),
                }
            })
            .collect();
        Ok(Plan {
            id: scaled.id.clone(),
            title: scaled.title.clone(),
            time_scale,
            baseline_secs: scaled.baseline.duration_secs,
            load: serde_json::to_value(&scaled.load).unwrap_or(Value::Null),
            faults,
            hints,
            window_secs: scaled.success.window_secs,
            conditions: scaled.success.conditions.iter().map(condition).collect(),
            config,
            cause: scaled.cause.clone(),
            fix: scaled.solution.patches.clone(),
            solution: serde_json::to_value(&scaled.solution).unwrap_or(Value::Null),
            debrief: serde_json::to_value(&scaled.debrief).unwrap_or(Value::Null),
        })
    }
}
