//! Scenario files: the vocabulary instructors write (journeys, SLIs), the file model, parsing,
//! validation and lint. Shared by the runner (which measures the SLIs), the orchestrator (which
//! evaluates conditions on them) and the CLI (`observastack scenario lint`).

pub mod load;
pub mod sli;
