//! Scenario files: the vocabulary instructors write (journeys, SLIs), the file model, parsing,
//! validation and lint. Shared by the runner (which measures the SLIs), the orchestrator (which
//! evaluates conditions on them) and the CLI (`observastack scenario lint`).

pub mod catalog;
pub mod condition;
pub mod diagnostic;
mod file;
pub mod lint;
pub mod load;
pub mod loader;
pub mod model;
pub mod sli;

pub use catalog::{Problem, ServiceCatalog, ServiceSpec};
pub use condition::{Condition, ConditionError, Op};
pub use diagnostic::{Diagnostic, Severity};
pub use lint::lint_source;
pub use loader::{find_files, load_dir, load_files};
pub use model::{
    Baseline, Cause, ConfigPredicate, Debrief, Difficulty, Expectation, Fault, Hint, HintTrigger, Scenario,
    ServicePatch, Solution, Success, TIME_SCALE_MAX, TIME_SCALE_MIN, TimeScaleError,
};
