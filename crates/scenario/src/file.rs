//! The scenario file exactly as written: serde shapes with `deny_unknown_fields`, strings where
//! the model has conditions, options where the model has a choice. Lint turns it into the model.

use serde::Deserialize;
use serde_json::Value;

use crate::load::LoadSpec;
use crate::model::Difficulty;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    pub id: String,
    pub title: String,
    pub difficulty: Difficulty,
    pub summary: String,
    pub learning_objectives: Vec<String>,
    pub baseline: BaselineFile,
    pub load: LoadSpec,
    pub faults: Vec<FaultFile>,
    /// Absent: every learner-changeable field the faults set.
    #[serde(default)]
    pub cause: Option<Vec<CauseFile>>,
    pub hints: Vec<HintFile>,
    pub success: SuccessFile,
    pub solution: SolutionFile,
    pub debrief: DebriefFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BaselineFile {
    pub duration_secs: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultFile {
    pub service: String,
    pub at_secs: f64,
    pub patch: Value,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CauseFile {
    pub service: String,
    pub fields: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HintFile {
    pub after_secs: Option<f64>,
    pub when: Option<String>,
    pub for_secs: Option<f64>,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuccessFile {
    pub window_secs: f64,
    pub conditions: Vec<String>,
    #[serde(default)]
    pub config: Vec<ConfigPredicateFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigPredicateFile {
    pub service: String,
    pub field: String,
    pub equal: Option<Value>,
    pub not_equal: Option<Value>,
    pub one_of: Option<Vec<Value>>,
    pub at_least: Option<f64>,
    pub at_most: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SolutionFile {
    pub summary: String,
    pub steps: Vec<String>,
    pub patches: Vec<ServicePatchFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServicePatchFile {
    pub service: String,
    pub patch: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DebriefFile {
    pub what_broke: String,
    pub why: String,
    pub lessons: Vec<String>,
}
