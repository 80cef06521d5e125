//! The services a scenario may patch, as data: each one's default config, JSON Schema,
//! instructor-only fields and extra checks. The caller builds the catalog from the real service
//! types, so this crate validates patches exactly as the services' `/config` would without
//! depending on them.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// A rule a config document breaks, with the dotted field path inside the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub rule: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { field: field.into(), rule: rule.into(), message: message.into() }
    }
}

/// Checks a JSON Schema cannot express (`RuntimeConfig::check`), run on a schema-valid document.
pub type CheckFn = Box<dyn Fn(&Value) -> Vec<Problem> + Send + Sync>;

/// The schema of a service does not compile, or its defaults break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError(pub String);

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CatalogError {}

/// One service as scenarios see it.
pub struct ServiceSpec {
    name: String,
    defaults: Value,
    schema: Value,
    validator: jsonschema::Validator,
    instructor_only: Vec<String>,
    check: Option<CheckFn>,
}

impl fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ServiceSpec {
    /// `defaults` is the service's default config as JSON, `schema` the JSON Schema its
    /// `/config/schema` serves, `instructor_only` its `RuntimeConfig::instructor_only()`.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        defaults: Value,
        schema: Value,
        instructor_only: impl IntoIterator<Item = S>,
    ) -> Result<Self, CatalogError> {
        let name = name.into();
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| CatalogError(format!("the config schema of `{name}` does not compile: {e}")))?;
        let spec = ServiceSpec {
            name,
            defaults,
            schema,
            validator,
            instructor_only: instructor_only.into_iter().map(Into::into).collect(),
            check: None,
        };
        if let Some(problem) = spec.validate(&spec.defaults).into_iter().next() {
            return Err(CatalogError(format!(
                "the default config of `{}` breaks its own schema at `{}`: {}",
                spec.name, problem.field, problem.message
            )));
        }
        Ok(spec)
    }

    /// Adds the service's own checks, run after the schema passes.
    pub fn with_check(mut self, check: impl Fn(&Value) -> Vec<Problem> + Send + Sync + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn defaults(&self) -> &Value {
        &self.defaults
    }

    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Dotted field prefixes only the instructor role may change.
    pub fn instructor_only(&self) -> &[String] {
        &self.instructor_only
    }

    /// Whether only the instructor role may change `field` (dotted), as the service decides.
    pub fn is_instructor_only(&self, field: &str) -> bool {
        self.instructor_only.iter().any(|prefix| {
            field == prefix || field.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Every rule `config` breaks: schema violations first (unknown fields one by one), then
    /// the service's own checks when the schema passes.
    pub fn validate(&self, config: &Value) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self.validator.iter_errors(config).flat_map(|e| schema_problems(&e)).collect();
        if problems.is_empty()
            && let Some(check) = &self.check
        {
            problems = check(config);
        }
        problems.sort_by(|a, b| a.field.cmp(&b.field));
        problems
    }

    /// The schema of the field at `dotted` (e.g. `release.version`), if the config has one.
    pub fn field_schema(&self, dotted: &str) -> Option<&Value> {
        let mut node = &self.schema;
        for key in dotted.split('.') {
            node = child_schema(&self.schema, node, key)?;
        }
        Some(resolve(&self.schema, node))
    }
}

/// Follows a local `$ref` (`#/$defs/Name`), as schemars writes them.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..32 {
        match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => node = target,
                None => return node,
            },
            None => return node,
        }
    }
    node
}

fn child_schema<'a>(root: &'a Value, node: &'a Value, key: &str) -> Option<&'a Value> {
    let node = resolve(root, node);
    if let Some(child) = node.get("properties").and_then(|p| p.get(key)) {
        return Some(child);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for sub in node.get(combinator).and_then(Value::as_array).into_iter().flatten() {
            if let Some(child) = child_schema(root, sub, key) {
                return Some(child);
            }
        }
    }
    node.get("additionalProperties").filter(|a| a.is_object())
}

fn schema_problems(err: &jsonschema::ValidationError<'_>) -> Vec<Problem> {
    let field = pointer_to_dotted(err.instance_path.as_str());
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = &err.kind {
        return unexpected
            .iter()
            .map(|name| {
                let path = if field.is_empty() { name.clone() } else { format!("{field}.{name}") };
                Problem::new(path, "unknown_field", format!("unknown field `{name}`"))
            })
            .collect();
    }
    let rule = err.schema_path.as_str().rsplit('/').next().unwrap_or("schema").to_owned();
    vec![Problem::new(field, rule, err.to_string())]
}

/// `/db/pool_size` → `db.pool_size`; the empty pointer is the empty path.
fn pointer_to_dotted(pointer: &str) -> String {
    pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect::<Vec<_>>().join(".")
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes a key, anything else
/// replaces. The same merge the services' `PATCH /config` applies (both use `json-patch`).
pub use json_patch::merge as merge_patch;

/// The value at a dotted path of a config document.
pub fn field_value<'a>(config: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(config, |node, key| node.get(key))
}

/// The services scenarios may patch, by the name scenario files use (`shop`, `gateway`).
#[derive(Debug, Default)]
pub struct ServiceCatalog {
    services: BTreeMap<String, ServiceSpec>,
}

impl ServiceCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, spec: ServiceSpec) -> Self {
        self.services.insert(spec.name.clone(), spec);
        self
    }

    pub fn get(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> ServiceSpec {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "db": { "$ref": "#/$defs/Db" },
                "faults": { "type": "object", "additionalProperties": { "$ref": "#/$defs/Fault" } }
            },
            "$defs": {
                "Db": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "pool_size": { "type": "integer", "minimum": 1, "maximum": 100 } }
                },
                "Fault": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "latency_ms": { "type": "integer", "minimum": 0 } }
                }
            }
        });
        let spec = ServiceSpec::new("shop", json!({"db": {"pool_size": 10}, "faults": {}}), schema, ["faults"]);
        spec.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn validate_names_each_field_and_rule() {
        let spec = spec();
        let problems = spec.validate(&json!({"db": {"pool_size": 0, "pool": 1}, "nope": 1}));
        let found: Vec<_> = problems.iter().map(|p| (p.field.as_str(), p.rule.as_str())).collect();
        assert_eq!(found, [("db.pool", "unknown_field"), ("db.pool_size", "minimum"), ("nope", "unknown_field")]);
    }

    #[test]
    fn field_schema_follows_refs_and_map_values() {
        let spec = spec();
        assert_eq!(spec.field_schema("db.pool_size").and_then(|s| s.get("maximum")), Some(&json!(100)));
        assert!(spec.field_schema("faults.GET /api/ping.latency_ms").is_some());
        assert!(spec.field_schema("db.size").is_none());
        assert!(spec.field_schema("db.pool_size.x").is_none());
    }

    #[test]
    fn instructor_only_matches_whole_segments() {
        let spec = spec();
        assert!(spec.is_instructor_only("faults"));
        assert!(spec.is_instructor_only("faults.*.latency_ms"));
        assert!(!spec.is_instructor_only("faultsy"));
        assert!(!spec.is_instructor_only("db.pool_size"));
    }

    #[test]
    fn defaults_that_break_the_schema_are_refused() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 1}}});
        let err = ServiceSpec::new("x", json!({"n": 5}), schema, Vec::<String>::new()).expect_err("5 > 1");
        assert!(err.0.contains("`n`"), "{err}");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_patch(&mut doc, &json!({"a": {"b": 5, "c": null}, "e": [1]}));
        assert_eq!(doc, json!({"a": {"b": 5}, "d": 3, "e": [1]}));
        assert_eq!(field_value(&doc, "a.b"), Some(&json!(5)));
        assert_eq!(field_value(&doc, "a.x"), None);
    }
}
