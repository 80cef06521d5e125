//! The scenario catalog: every scenario file found in the configured folders, validated
//! against the real config schemas of the services they patch, and the views the API serves
//! (a learner does not see faults, cause, hints, config predicates, solution or debrief before
//! a run of the scenario was resolved or given up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use scenario::model::Scenario;
use serde::Serialize;
use serde_json::Value;

/// One entry of `GET /api/scenarios`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScenarioSummary {
    pub id: String,
    pub title: String,
    /// beginner | intermediate | advanced
    pub difficulty: String,
    pub summary: String,
    pub learning_objectives: Vec<String>,
}

/// The scenarios a run may be started from, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    scenarios: BTreeMap<String, Arc<Scenario>>,
}

impl Catalog {
    pub fn from_scenarios(scenarios: impl IntoIterator<Item = Scenario>) -> Self {
        let mut out = BTreeMap::new();
        for scenario in scenarios {
            if out.contains_key(&scenario.id) {
                tracing::warn!(id = %scenario.id, "a scenario with this id was already loaded; keeping the first");
                continue;
            }
            out.insert(scenario.id.clone(), Arc::new(scenario));
        }
        Self { scenarios: out }
    }

    /// Loads every scenario file of `dirs`, in order (the first of two equal ids wins). A file
    /// with errors is skipped and reported in the log, so one broken community scenario does
    /// not keep the others from being offered; a folder that cannot be read fails start-up.
    pub fn load(dirs: &[PathBuf]) -> anyhow::Result<Self> {
        let services = stack_config::service_catalog()?;
        let (scenarios, diagnostics) = scenario::load_dir(dirs, &services);
        for diagnostic in &diagnostics {
            if diagnostic.rule == "io" && dirs.contains(&diagnostic.file) {
                anyhow::bail!("cannot read the scenario folder {}: {}", diagnostic.file.display(), diagnostic.message);
            }
            if diagnostic.is_error() {
                tracing::warn!(%diagnostic, "skipping a scenario file with errors");
            } else {
                tracing::info!(%diagnostic, "scenario lint warning");
            }
        }
        let catalog = Self::from_scenarios(scenarios);
        tracing::info!(scenarios = catalog.scenarios.len(), dirs = ?dirs, "scenario catalog loaded");
        Ok(catalog)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Scenario>> {
        self.scenarios.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.scenarios.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty()
    }

    pub fn summaries(&self) -> Vec<ScenarioSummary> {
        self.scenarios.values().map(|s| summary(s)).collect()
    }
}

pub fn summary(scenario: &Scenario) -> ScenarioSummary {
    let difficulty =
        serde_json::to_value(scenario.difficulty).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    ScenarioSummary {
        id: scenario.id.clone(),
        title: scenario.title.clone(),
        difficulty,
        summary: scenario.summary.clone(),
        learning_objectives: scenario.learning_objectives.clone(),
    }
}

/// The whole scenario as JSON (what instructors, and learners after a run, see).
pub fn full_view(scenario: &Scenario) -> Value {
    serde_json::to_value(scenario).unwrap_or(Value::Null)
}

/// What a learner may see before trying the scenario: the story, the load, and what "healthy"
/// means (the success conditions), but not what will break or how to fix it.
pub fn learner_view(scenario: &Scenario) -> Value {
    let mut full = full_view(scenario);
    let Some(doc) = full.as_object_mut() else { return full };
    for spoiler in ["faults", "cause", "solution", "debrief"] {
        doc.remove(spoiler);
    }
    let hints = doc.remove("hints").and_then(|h| h.as_array().map(Vec::len)).unwrap_or(0);
    doc.insert("hint_count".to_owned(), Value::from(hints));
    if let Some(success) = doc.get_mut("success").and_then(Value::as_object_mut) {
        success.remove("config");
    }
    doc.insert("spoilers_hidden".to_owned(), Value::Bool(true));
    Value::Object(std::mem::take(doc))
}
