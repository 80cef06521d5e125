//! Parsing and lint: TOML syntax, the file's shape (unknown fields, types), then every rule a
//! scenario must keep, each problem pinned to its line and field. Patches are checked against
//! the target services' real config schemas from a `ServiceCatalog`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::catalog::{ServiceCatalog, ServiceSpec, merge_patch};
use crate::condition::Condition;
use crate::diagnostic::{Diagnostic, FieldPath, Segment, Severity, line_col};
use crate::file::{CauseFile, ConfigPredicateFile, ScenarioFile, ServicePatchFile};
use crate::load::LoadSpec;
use crate::model::{
    Baseline, Cause, ConfigPredicate, Debrief, Expectation, Fault, Hint, HintTrigger, Scenario, ServicePatch, Solution,
    Success, dotted_overlap,
};
use crate::sli::Subject;

/// The longest duration any time field may name: one day.
pub const MAX_SECS: f64 = 86_400.0;

impl Scenario {
    /// Parses and validates one scenario file; `path` names it in diagnostics and its stem must
    /// equal the `id`. Warnings do not fail the parse (see [`lint_source`] to get them).
    pub fn parse(source: &str, path: &Path, catalog: &ServiceCatalog) -> Result<Scenario, Vec<Diagnostic>> {
        let (scenario, diagnostics) = lint_source(source, path, catalog);
        match scenario {
            Some(scenario) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(scenario),
            _ => Err(diagnostics),
        }
    }
}

/// Every problem in one scenario file, in file order, and the scenario when it has no errors.
pub fn lint_source(source: &str, path: &Path, catalog: &ServiceCatalog) -> (Option<Scenario>, Vec<Diagnostic>) {
    let table = match DeTable::parse(source) {
        Ok(table) => table,
        Err(err) => {
            let offset = err.span().map_or(0, |s| s.start);
            let (line, column) = line_col(source, offset);
            let diagnostic = Diagnostic {
                file: path.to_owned(),
                line,
                column,
                field: FieldPath::root().to_string(),
                rule: "toml_syntax".to_owned(),
                message: err.message().to_owned(),
                severity: Severity::Error,
            };
            return (None, vec![diagnostic]);
        }
    };
    let mut linter = Linter { file: path, source, table: &table, catalog, out: Vec::new(), patches_valid: true };
    let parsed: Result<ScenarioFile, _> = serde_path_to_error::deserialize(toml::de::Deserializer::from(table.clone()));
    let scenario = match parsed {
        Ok(file) => linter.check(file),
        Err(err) => {
            linter.shape_error(err);
            None
        }
    };
    let mut diagnostics = linter.out;
    diagnostics.sort_by_key(|d| (d.line, d.column));
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    (scenario.filter(|_| !has_errors), diagnostics)
}

fn is_kebab_case(id: &str) -> bool {
    !id.is_empty()
        && id
            .split('-')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

fn load_validator() -> Option<&'static jsonschema::Validator> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema = serde_json::to_value(schemars::schema_for!(LoadSpec)).ok()?;
            jsonschema::validator_for(&schema).ok()
        })
        .as_ref()
}

/// Every key path (dotted) a patch writes, parents included: `{"a": {"b": 1}}` → `a`, `a.b`.
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            out.push(path.clone());
            key_paths(child, &path, out);
        }
    }
}

/// Dotted paths of the leaves that differ between two config documents.
fn changed_leaves(old: &Value, new: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => changed_leaves(x, y, &path, out),
                    _ => {
                        out.insert(path);
                    }
                }
            }
        }
        _ if old != new => {
            out.insert(prefix.to_owned());
        }
        _ => {}
    }
}

/// `{"release": {"version": V}}` for `release.version`.
fn patch_setting(dotted: &str, value: &Value) -> Value {
    dotted.rsplit('.').fold(value.clone(), |inner, key| Value::Object(Map::from_iter([(key.to_owned(), inner)])))
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

struct Linter<'a> {
    file: &'a Path,
    source: &'a str,
    table: &'a Spanned<DeTable<'a>>,
    catalog: &'a ServiceCatalog,
    out: Vec<Diagnostic>,
    /// False once any fault or solution patch is rejected: checks that simulate the patches
    /// (does the solution meet the predicates?) would then only repeat that error.
    patches_valid: bool,
}

/// Where a field path lands in the source.
struct Located {
    /// The key (or array element) of the deepest segment found.
    start: usize,
    /// The value's span when every segment was found.
    value: Option<Range<usize>>,
}

fn locate(table: &Spanned<DeTable<'_>>, path: &FieldPath) -> Located {
    let mut start = 0;
    let mut current: Option<&DeTable<'_>> = Some(table.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for segment in &path.0 {
        let next = match (segment, current, value) {
            (Segment::Key(key), Some(t), _) => {
                t.iter().find(|(k, _)| k.get_ref() == key).map(|(k, v)| (k.span().start, v))
            }
            (Segment::Index(i), None, Some(v)) => {
                v.get_ref().as_array().and_then(|a| a.get(*i)).map(|e| (e.span().start, e))
            }
            _ => None,
        };
        let Some((at, found)) = next else {
            return Located { start, value: None };
        };
        start = at;
        value = Some(found);
        current = found.get_ref().as_table();
    }
    Located { start, value: value.map(Spanned::span) }
}

/// Line and column of the field at `path` in `source` (1:1 when the source does not parse).
pub(crate) fn position_of(source: &str, path: &FieldPath) -> (usize, usize) {
    let offset = DeTable::parse(source).map_or(0, |table| locate(&table, path).start);
    line_col(source, offset)
}

impl<'a> Linter<'a> {
    fn locate(&self, path: &FieldPath) -> Located {
        locate(self.table, path)
    }

    /// Line and column of `path`, or of `offset` bytes into its string value when the string is
    /// written without escapes (so byte offsets in the text and the source agree).
    fn position(&self, path: &FieldPath, string_offset: Option<usize>) -> (usize, usize) {
        let located = self.locate(path);
        let precise = string_offset.zip(located.value).and_then(|(offset, span)| {
            let raw = self.source.get(span.clone())?;
            let quote = raw.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let inner = raw.strip_prefix(quote)?.strip_suffix(quote)?;
            (!inner.contains('\\') && offset <= inner.len()).then_some(span.start + 1 + offset)
        });
        line_col(self.source, precise.unwrap_or(located.start))
    }

    fn report(&mut self, severity: Severity, path: &FieldPath, offset: Option<usize>, rule: &str, message: String) {
        let (line, column) = self.position(path, offset);
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            field: path.to_string(),
            rule: rule.to_owned(),
            message,
            severity,
        });
    }

    fn error(&mut self, path: &FieldPath, rule: &str, message: impl Into<String>) {
        self.report(Severity::Error, path, None, rule, message.into());
    }

    fn warn(&mut self, path: &FieldPath, rule: &str, message: impl Into<String>) {
        self.report(Severity::Warning, path, None, rule, message.into());
    }

    /// The file does not have the scenario's shape: one problem, as serde stopped there.
    fn shape_error(&mut self, err: serde_path_to_error::Error<toml::de::Error>) {
        let mut path = FieldPath(
            err.path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => Some(Segment::Key(variant.clone())),
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        let inner = err.into_inner();
        // Serde names Rust types; a scenario author thinks in TOML values.
        let message = inner
            .message()
            .replace("expected f64", "expected a number")
            .replace("expected u64", "expected a whole number of 0 or more")
            .replace("expected u32", "expected a whole number of 0 or more");
        let rule = if message.starts_with("unknown field") {
            "unknown_field"
        } else if let Some(name) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            path = path.key(name);
            "required"
        } else if message.starts_with("invalid type") {
            "type"
        } else if message.starts_with("unknown variant") {
            "enum"
        } else {
            "value"
        };
        // A missing field has no span of its own: point at the table it is missing from.
        let offset = match inner.span() {
            Some(span) if rule != "required" => span.start,
            _ => {
                let parent = FieldPath(path.0[..path.0.len().saturating_sub(1)].to_vec());
                self.locate(&parent).start
            }
        };
        let (line, column) = line_col(self.source, offset);
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            field: path.to_string(),
            rule: rule.to_owned(),
            message,
            severity: Severity::Error,
        });
    }

    fn non_empty_text(&mut self, path: &FieldPath, text: &str) {
        if text.trim().is_empty() {
            self.error(path, "non_empty", format!("`{path}` must not be empty"));
        }
    }

    fn non_empty_list<T>(&mut self, path: &FieldPath, list: &[T], what: &str) -> bool {
        if list.is_empty() {
            self.error(path, "non_empty", format!("a scenario needs at least one {what}"));
        }
        !list.is_empty()
    }

    /// A time in seconds: finite, not negative (or above 0 when `positive`), at most a day.
    fn seconds(&mut self, path: &FieldPath, secs: f64, positive: bool) {
        if !secs.is_finite() || secs < 0.0 {
            self.error(path, "non_negative", format!("`{path}` is {secs}; a time must be 0 or more seconds"));
        } else if positive && secs == 0.0 {
            self.error(path, "positive", format!("`{path}` must be more than 0 seconds"));
        } else if secs > MAX_SECS {
            self.error(path, "maximum", format!("`{path}` is {secs}; at most {MAX_SECS} seconds (a day)"));
        }
    }

    fn service(&mut self, path: &FieldPath, name: &str) -> Option<&'a ServiceSpec> {
        let found = self.catalog.get(name);
        if found.is_none() {
            self.patches_valid = false;
            let known = self.catalog.names().collect::<Vec<_>>().join(", ");
            self.error(path, "known_service", format!("unknown service `{name}`; expected one of {known}"));
        }
        found
    }

    fn condition(&mut self, path: &FieldPath, text: &str) -> Option<Condition> {
        match Condition::parse(text) {
            Ok(condition) => Some(condition),
            Err(err) => {
                self.report(Severity::Error, path, Some(err.offset), err.rule, err.message);
                None
            }
        }
    }

    /// Applies `patch` to `state` if the result is a valid config of `spec`; reports each
    /// problem at its field inside the patch.
    fn apply_patch(&mut self, path: &FieldPath, spec: &ServiceSpec, state: &mut Value, patch: &Value) -> bool {
        let Some(fields) = patch.as_object() else {
            self.error(
                path,
                "type",
                format!(
                    "a patch is a table of `{}` config fields, e.g. `{{ db = {{ pool_size = 20 }} }}`",
                    spec.name()
                ),
            );
            return false;
        };
        if fields.is_empty() {
            self.error(path, "non_empty", "the patch changes nothing; name at least one config field");
            return false;
        }
        let mut candidate = state.clone();
        merge_patch(&mut candidate, patch);
        let problems = spec.validate(&candidate);
        for problem in &problems {
            let message = if problem.rule == "unknown_field" {
                format!("{} in the `{}` config", problem.message, spec.name())
            } else {
                format!("`{}` config `{}`: {}", spec.name(), problem.field, problem.message)
            };
            self.error(&path.join_dotted(&problem.field), &problem.rule, message);
        }
        if problems.is_empty() {
            *state = candidate;
        } else {
            self.patches_valid = false;
        }
        problems.is_empty()
    }

    fn check(&mut self, file: ScenarioFile) -> Option<Scenario> {
        let root = FieldPath::root();
        let id_path = root.key("id");
        let stem = self.file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if !is_kebab_case(&file.id) {
            self.error(
                &id_path,
                "kebab_case",
                format!("id `{}` must be kebab-case: lowercase letters and digits joined by single dashes, e.g. `bad-release-checkout`", file.id),
            );
        } else if file.id != stem {
            self.error(
                &id_path,
                "id_matches_file",
                format!("id `{}` must equal the file name without `.toml` (`{stem}`)", file.id),
            );
        }
        self.non_empty_text(&root.key("title"), &file.title);
        self.non_empty_text(&root.key("summary"), &file.summary);
        let objectives = root.key("learning_objectives");
        if self.non_empty_list(&objectives, &file.learning_objectives, "learning objective") {
            for (i, text) in file.learning_objectives.iter().enumerate() {
                self.non_empty_text(&objectives.index(i), text);
            }
        }
        self.seconds(&root.key("baseline").key("duration_secs"), file.baseline.duration_secs, true);
        self.check_load(&file.load);

        let defaults: BTreeMap<String, Value> = self
            .catalog
            .names()
            .filter_map(|n| self.catalog.get(n).map(|s| (n.to_owned(), s.defaults().clone())))
            .collect();
        let faults = self.check_faults(&file);
        let mut faulted = defaults.clone();
        for fault in &faults {
            if let (Some(state), Some(spec)) = (faulted.get_mut(&fault.service), self.catalog.get(&fault.service)) {
                // Invalid patches were reported already; the state carries on without them.
                let mut candidate = state.clone();
                merge_patch(&mut candidate, &fault.patch);
                if spec.validate(&candidate).is_empty() {
                    *state = candidate;
                }
            }
        }

        let cause = self.check_cause(&file, &defaults, &faulted);
        let hints = self.check_hints(&file);
        let (patches, solved) = self.check_solution(&file, &faulted);
        self.check_solution_targets_cause(&file, &cause);
        let success = self.check_success(&file, &faulted, &solved);
        let debrief = root.key("debrief");
        self.non_empty_text(&debrief.key("what_broke"), &file.debrief.what_broke);
        self.non_empty_text(&debrief.key("why"), &file.debrief.why);
        let lessons = debrief.key("lessons");
        if self.non_empty_list(&lessons, &file.debrief.lessons, "lesson in the debrief") {
            for (i, text) in file.debrief.lessons.iter().enumerate() {
                self.non_empty_text(&lessons.index(i), text);
            }
        }

        Some(Scenario {
            id: file.id,
            title: file.title,
            difficulty: file.difficulty,
            summary: file.summary,
            learning_objectives: file.learning_objectives,
            baseline: Baseline { duration_secs: file.baseline.duration_secs },
            load: file.load,
            faults,
            cause,
            hints: hints?,
            success: success?,
            solution: Solution { summary: file.solution.summary, steps: file.solution.steps, patches },
            debrief: Debrief {
                what_broke: file.debrief.what_broke,
                why: file.debrief.why,
                lessons: file.debrief.lessons,
            },
        })
    }

    fn check_load(&mut self, load: &LoadSpec) {
        let path = FieldPath::root().key("load");
        if let (Some(validator), Ok(json)) = (load_validator(), serde_json::to_value(load)) {
            let problems: Vec<(String, String, String)> = validator
                .iter_errors(&json)
                .map(|e| {
                    let field = e.instance_path.as_str().split('/').skip(1).collect::<Vec<_>>().join(".");
                    let rule = e.schema_path.as_str().rsplit('/').next().unwrap_or("schema").to_owned();
                    (field, rule, e.to_string())
                })
                .collect();
            for (field, rule, message) in problems {
                self.error(&path.join_dotted(&field), &rule, format!("`load.{field}`: {message}"));
            }
        }
        for problem in load.check() {
            self.error(&path.join_dotted(&problem.field), problem.rule, problem.message);
        }
    }

    /// Faults in time order, each patch checked on top of the ones before it.
    fn check_faults(&mut self, file: &ScenarioFile) -> Vec<Fault> {
        let list = FieldPath::root().key("faults");
        if !self.non_empty_list(&list, &file.faults, "fault (a `[[faults]]` table)") {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..file.faults.len()).collect();
        order.sort_by(|a, b| file.faults[*a].at_secs.total_cmp(&file.faults[*b].at_secs));
        let mut state: BTreeMap<String, Value> = BTreeMap::new();
        let mut faults = Vec::new();
        for i in order {
            let fault = &file.faults[i];
            let path = list.index(i);
            self.seconds(&path.key("at_secs"), fault.at_secs, false);
            if let Some(spec) = self.service(&path.key("service"), &fault.service) {
                let current = state.entry(fault.service.clone()).or_insert_with(|| spec.defaults().clone());
                let before = current.clone();
                let patch_path = path.key("patch");
                if self.apply_patch(&patch_path, spec, current, &fault.patch) && before == *current {
                    self.warn(
                        &patch_path,
                        "changes_something",
                        format!(
                            "the patch leaves the `{}` config as it was, so this fault does nothing",
                            fault.service
                        ),
                    );
                }
            }
            faults.push(Fault {
                service: fault.service.clone(),
                at_secs: fault.at_secs,
                patch: fault.patch.clone(),
                note: fault.note.clone(),
            });
        }
        faults
    }

    /// The cause as written (each field known and learner-changeable), or, when the file
    /// names none, every learner-changeable field the faults change, by service.
    fn check_cause(
        &mut self,
        file: &ScenarioFile,
        defaults: &BTreeMap<String, Value>,
        faulted: &BTreeMap<String, Value>,
    ) -> Vec<Cause> {
        let mut fault_fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut faults_change_something = false;
        for (service, config) in faulted {
            let (Some(default), Some(spec)) = (defaults.get(service), self.catalog.get(service)) else { continue };
            let mut changed = BTreeSet::new();
            changed_leaves(default, config, "", &mut changed);
            faults_change_something |= !changed.is_empty();
            changed.retain(|f| !spec.is_instructor_only(f));
            if !changed.is_empty() {
                fault_fields.insert(service.clone(), changed);
            }
        }
        let Some(written) = &file.cause else {
            if fault_fields.is_empty() && faults_change_something && self.patches_valid {
                self.error(
                    &FieldPath::root().key("faults"),
                    "has_cause",
                    "the faults change no field a learner may change, so no fix can be graded targeted; name \
                     the fields a targeted fix changes in a `[[cause]]` table",
                );
            }
            return fault_fields
                .into_iter()
                .map(|(service, fields)| Cause { service, fields: fields.into_iter().collect() })
                .collect();
        };
        let list = FieldPath::root().key("cause");
        self.non_empty_list(&list, written, "cause (a `[[cause]]` table), or leave `cause` out");
        let mut out = Vec::new();
        for (i, CauseFile { service, fields }) in written.iter().enumerate() {
            let path = list.index(i);
            let Some(spec) = self.service(&path.key("service"), service) else { continue };
            let fields_path = path.key("fields");
            self.non_empty_list(&fields_path, fields, "field in each `[[cause]]` table");
            for (j, field) in fields.iter().enumerate() {
                let at = fields_path.index(j);
                if spec.field_schema(field).is_none() {
                    self.error(&at, "known_field", format!("`{service}` has no config field `{field}`"));
                } else if spec.is_instructor_only(field) {
                    self.error(
                        &at,
                        "learner_writable",
                        format!(
                            "only the instructor may change `{field}` of `{service}`; the cause names what a learner's fix changes"
                        ),
                    );
                } else if !fault_fields.get(service).is_some_and(|f| f.iter().any(|f| dotted_overlap(f, field))) {
                    self.warn(
                        &at,
                        "faulted",
                        format!(
                            "no fault changes `{service}` `{field}`; a learner changing it will be graded targeted all the same"
                        ),
                    );
                }
            }
            out.push(Cause { service: service.clone(), fields: fields.clone() });
        }
        out
    }

    /// The reference solution must be what grading calls targeted.
    fn check_solution_targets_cause(&mut self, file: &ScenarioFile, cause: &[Cause]) {
        // A solution already refused says so; this would only repeat it.
        if cause.is_empty() || file.solution.patches.is_empty() || !self.patches_valid {
            return;
        }
        let touches = file.solution.patches.iter().any(|p| {
            let mut keys = Vec::new();
            key_paths(&p.patch, "", &mut keys);
            // Leaves only: a parent key (`workers`) says nothing about which field changed.
            let leaf =
                |k: &String| !keys.iter().any(|o| o.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with('.')));
            keys.iter().filter(|k| leaf(k)).any(|k| cause.iter().any(|c| c.covers(&p.service, k)))
        });
        if !touches {
            let names: Vec<String> =
                cause.iter().flat_map(|c| c.fields.iter().map(move |f| format!("{} {f}", c.service))).collect();
            self.error(
                &FieldPath::root().key("solution").key("patches"),
                "targets_cause",
                format!(
                    "no solution patch changes a cause field ({}), so the reference solution would be graded blanket",
                    names.join(", ")
                ),
            );
        }
    }

    /// A condition on a journey the load never starts is never known.
    fn journey_in_mix(&self, file: &ScenarioFile, condition: &Condition) -> bool {
        match condition.subject {
            Subject::All => true,
            Subject::Journey(journey) => file.load.mix.weights().contains_key(&journey),
        }
    }

    fn check_hints(&mut self, file: &ScenarioFile) -> Option<Vec<Hint>> {
        let list = FieldPath::root().key("hints");
        self.non_empty_list(&list, &file.hints, "hint (a `[[hints]]` table)");
        let mut hints = Vec::new();
        for (i, hint) in file.hints.iter().enumerate() {
            let path = list.index(i);
            self.non_empty_text(&path.key("text"), &hint.text);
            let trigger = match (hint.after_secs, &hint.when) {
                (Some(_), Some(_)) | (None, None) => {
                    let has = if hint.after_secs.is_some() { "both" } else { "neither" };
                    self.error(
                        &path,
                        "one_trigger",
                        format!("a hint needs exactly one of `after_secs` (a time) or `when` (a condition); this one has {has}"),
                    );
                    None
                }
                (Some(after_secs), None) => {
                    self.seconds(&path.key("after_secs"), after_secs, false);
                    if hint.for_secs.is_some() {
                        self.error(
                            &path.key("for_secs"),
                            "for_secs_needs_when",
                            "`for_secs` only applies to a `when` hint",
                        );
                    }
                    Some(HintTrigger::After { after_secs })
                }
                (None, Some(text)) => {
                    let for_secs = hint.for_secs.unwrap_or(0.0);
                    self.seconds(&path.key("for_secs"), for_secs, false);
                    let when_path = path.key("when");
                    let condition = self.condition(&when_path, text);
                    if let Some(condition) = &condition
                        && !self.journey_in_mix(file, condition)
                    {
                        self.warn(
                            &when_path,
                            "subject_in_mix",
                            format!(
                                "the load mix starts no `{}` journeys, so this hint never shows",
                                condition.subject
                            ),
                        );
                    }
                    condition.map(|when| HintTrigger::When { when, for_secs })
                }
            };
            hints.push(trigger.map(|trigger| Hint { trigger, text: hint.text.clone() }));
        }
        hints.into_iter().collect()
    }

    /// The solution's patches, each valid for a learner on top of the faulted configs, and the
    /// configs they lead to.
    fn check_solution(
        &mut self,
        file: &ScenarioFile,
        faulted: &BTreeMap<String, Value>,
    ) -> (Vec<ServicePatch>, BTreeMap<String, Value>) {
        let root = FieldPath::root().key("solution");
        self.non_empty_text(&root.key("summary"), &file.solution.summary);
        let steps = root.key("steps");
        if self.non_empty_list(&steps, &file.solution.steps, "solution step") {
            for (i, text) in file.solution.steps.iter().enumerate() {
                self.non_empty_text(&steps.index(i), text);
            }
        }
        let list = root.key("patches");
        self.non_empty_list(&list, &file.solution.patches, "solution patch (a `[[solution.patches]]` table)");
        let mut solved = faulted.clone();
        for (i, ServicePatchFile { service, patch }) in file.solution.patches.iter().enumerate() {
            let path = list.index(i);
            let Some(spec) = self.service(&path.key("service"), service) else { continue };
            let patch_path = path.key("patch");
            let mut keys = Vec::new();
            key_paths(patch, "", &mut keys);
            // Only the outermost instructor-only key: everything under it is the same mistake.
            let mut denied: Vec<&String> = Vec::new();
            for key in keys.iter().filter(|k| spec.is_instructor_only(k)) {
                if denied.iter().any(|d| key.strip_prefix(d.as_str()).is_some_and(|rest| rest.starts_with('.'))) {
                    continue;
                }
                denied.push(key);
                self.patches_valid = false;
                self.error(
                    &patch_path.join_dotted(key),
                    "learner_writable",
                    format!(
                        "only the instructor may change `{key}` of `{service}`; a solution is what a learner can apply"
                    ),
                );
            }
            let learner_may = denied.is_empty();
            if let Some(state) = solved.get_mut(service) {
                let mut candidate = state.clone();
                if self.apply_patch(&patch_path, spec, &mut candidate, patch) && learner_may {
                    *state = candidate;
                }
            }
        }
        let patches = file
            .solution
            .patches
            .iter()
            .map(|p| ServicePatch { service: p.service.clone(), patch: p.patch.clone() })
            .collect();
        (patches, solved)
    }

    fn check_success(
        &mut self,
        file: &ScenarioFile,
        faulted: &BTreeMap<String, Value>,
        solved: &BTreeMap<String, Value>,
    ) -> Option<Success> {
        let root = FieldPath::root().key("success");
        self.seconds(&root.key("window_secs"), file.success.window_secs, true);
        let list = root.key("conditions");
        self.non_empty_list(&list, &file.success.conditions, "success condition");
        let mut conditions = Vec::new();
        for (i, text) in file.success.conditions.iter().enumerate() {
            let path = list.index(i);
            let condition = self.condition(&path, text);
            if let Some(condition) = &condition
                && !self.journey_in_mix(file, condition)
            {
                self.error(
                    &path,
                    "subject_in_mix",
                    format!(
                        "the load mix starts no `{}` journeys, so `{condition}` is never known and success never comes",
                        condition.subject
                    ),
                );
            }
            conditions.push(condition);
        }
        let mut config = Vec::new();
        let list = root.key("config");
        for (i, predicate) in file.success.config.iter().enumerate() {
            config.push(self.check_predicate(&list.index(i), predicate, faulted, solved));
        }
        Some(Success {
            window_secs: file.success.window_secs,
            conditions: conditions.into_iter().collect::<Option<_>>()?,
            config: config.into_iter().collect::<Option<_>>()?,
        })
    }

    fn check_predicate(
        &mut self,
        path: &FieldPath,
        p: &ConfigPredicateFile,
        faulted: &BTreeMap<String, Value>,
        solved: &BTreeMap<String, Value>,
    ) -> Option<ConfigPredicate> {
        let spec = self.service(&path.key("service"), &p.service);
        let field_path = path.key("field");
        let field_schema = spec.and_then(|s| s.field_schema(&p.field));
        if spec.is_some() && field_schema.is_none() {
            self.error(&field_path, "known_field", format!("`{}` has no config field `{}`", p.service, p.field));
        }
        let given: Vec<(&str, Expectation)> = [
            p.equal.clone().map(|v| ("equal", Expectation::Equal(v))),
            p.not_equal.clone().map(|v| ("not_equal", Expectation::NotEqual(v))),
            p.one_of.clone().map(|v| ("one_of", Expectation::OneOf(v))),
            p.at_least.map(|v| ("at_least", Expectation::AtLeast(v))),
            p.at_most.map(|v| ("at_most", Expectation::AtMost(v))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [(name, expect)] = <[_; 1]>::try_from(given)
            .map_err(|given| {
                let found = if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
                };
                self.error(
                    path,
                    "one_comparator",
                    format!("set exactly one of `equal`, `not_equal`, `one_of`, `at_least`, `at_most`; found {found}"),
                );
            })
            .ok()?;
        let expect_path = path.key(name);
        let (spec, _) = spec.zip(field_schema)?;
        let mut valid = true;
        match &expect {
            Expectation::AtLeast(n) | Expectation::AtMost(n) => {
                let numeric = field_schema.and_then(|s| s.get("type")).is_some_and(|t| {
                    let is_number = |t: &Value| matches!(t.as_str(), Some("integer" | "number"));
                    is_number(t) || t.as_array().is_some_and(|a| a.iter().any(is_number))
                });
                if !numeric {
                    valid = false;
                    self.error(
                        &expect_path,
                        "numeric_field",
                        format!("`{name}` compares numbers, and `{}` is not a number", p.field),
                    );
                } else if !n.is_finite() {
                    valid = false;
                    self.error(&expect_path, "number", format!("`{name}` must be a finite number"));
                }
            }
            Expectation::Equal(v) | Expectation::NotEqual(v) => {
                valid = self.valid_value(&expect_path, spec, &p.field, v)
            }
            Expectation::OneOf(values) => {
                if values.is_empty() {
                    valid = false;
                    self.error(&expect_path, "non_empty", "`one_of` needs at least one value");
                }
                for (i, v) in values.iter().enumerate() {
                    valid &= self.valid_value(&expect_path.index(i), spec, &p.field, v);
                }
            }
        }
        let predicate = ConfigPredicate { service: p.service.clone(), field: p.field.clone(), expect };
        if valid && self.patches_valid {
            if let Some(config) = solved.get(&p.service)
                && !predicate.holds(config)
            {
                self.error(
                    path,
                    "solution_meets_predicate",
                    format!("after the solution's patches `{}` {} is {}, which this predicate rejects, so the reference solution cannot succeed", p.service, p.field, crate::catalog::field_value(config, &p.field).map_or("absent".to_owned(), describe)),
                );
            }
            if let Some(config) = faulted.get(&p.service)
                && predicate.holds(config)
            {
                self.warn(
                    path,
                    "predicate_discriminates",
                    "the predicate already holds while the faults are in place, so it tells nothing about the repair",
                );
            }
        }
        Some(predicate)
    }

    /// Whether `value` is a value the service would accept for `field`.
    fn valid_value(&mut self, path: &FieldPath, spec: &ServiceSpec, field: &str, value: &Value) -> bool {
        let mut candidate = spec.defaults().clone();
        merge_patch(&mut candidate, &patch_setting(field, value));
        let problems = spec.validate(&candidate);
        for problem in &problems {
            self.error(
                path,
                "valid_value",
                format!("{} is not a valid `{field}`: {}", describe(value), problem.message),
            );
        }
        problems.is_empty()
    }
}
