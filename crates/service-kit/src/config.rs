//! Typed runtime configuration served at `/config`. A change is validated whole against the
//! type's JSON Schema (one source of truth for ranges and unknown fields), checked for role
//! rights field by field, then swapped in atomically: readers never see a half-applied change.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Extension, Json, Router, middleware};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, broadcast, watch};

use crate::auth::{Caller, JwtKeys, Role, require_token};
use crate::body::{DEFAULT_BODY_LIMIT, JsonBody};
use crate::error::{ApiError, FieldError};
use crate::metrics::Metrics;

/// A service's runtime configuration type.
///
/// Ranges, enums and unknown-field rules live in the type (`#[schemars(range(..))]`,
/// `#[serde(deny_unknown_fields)]`) and reach clients through `GET /config/schema`.
pub trait RuntimeConfig: Serialize + DeserializeOwned + JsonSchema + Default + Clone + Send + Sync + 'static {
    /// Dotted field prefixes only the `instructor` role may change: by default the injected
    /// faults (see [`FAULTS_REASON`]).
    fn instructor_only() -> &'static [&'static str] {
        &["faults"]
    }

    /// Why [`RuntimeConfig::instructor_only`] fields are the instructor's, quoted in the 403 a
    /// learner gets, so the refusal explains itself.
    fn instructor_only_reason() -> &'static str {
        FAULTS_REASON
    }

    /// Rules a JSON Schema cannot express (cross-field rules, allowed map keys).
    fn check(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// The default [`RuntimeConfig::instructor_only_reason`].
pub const FAULTS_REASON: &str = "the injected faults are the incident: a learner repairs the system as an operator would instead of switching the fault off";

/// Request header naming the client program that sent a change (`cli`, `console`, …).
pub const CLIENT_HEADER: &str = "x-observastack-client";
/// Request header naming the path a change came through; set by the control gateway.
pub const THROUGH_HEADER: &str = "x-observastack-through";
/// The only [`THROUGH_HEADER`] value: the control gateway forwarded the request.
pub const THROUGH_CONTROL_GATEWAY: &str = "control-gateway";
/// `client` of a change whose request named no usable client.
pub const UNKNOWN_CLIENT: &str = "unknown";

/// Which client made a change and through which path, read from the request's headers. Both
/// are the caller's word (a direct caller could claim anything), so they are sanitised and
/// serve the record, never a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOrigin {
    pub client: String,
    pub through: Option<String>,
}

impl Default for ChangeOrigin {
    fn default() -> Self {
        Self { client: UNKNOWN_CLIENT.to_owned(), through: None }
    }
}

impl ChangeOrigin {
    /// `client` from [`CLIENT_HEADER`], else the User-Agent's product token (`curl/8.5` →
    /// `curl`), else `unknown`; `through` is `control-gateway` when [`THROUGH_HEADER`] says so.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let client = text(CLIENT_HEADER)
            .filter(|v| is_client_token(v))
            .map(str::to_owned)
            .or_else(|| {
                let name = text(header::USER_AGENT.as_str())?.split('/').next()?.trim().to_ascii_lowercase();
                is_client_token(&name).then_some(name)
            })
            .unwrap_or_else(|| UNKNOWN_CLIENT.to_owned());
        let through = text(THROUGH_HEADER).filter(|v| *v == THROUGH_CONTROL_GATEWAY).map(str::to_owned);
        Self { client, through }
    }
}

/// Lowercase `[a-z0-9._-]{1,32}`: short enough for a table cell, nothing to escape anywhere.
fn is_client_token(value: &str) -> bool {
    (1..=32).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// A configuration value together with the revision it was published at.
#[derive(Debug)]
pub struct Snapshot<T> {
    pub revision: u64,
    pub updated_at: DateTime<Utc>,
    pub config: T,
}

impl<T> std::ops::Deref for Snapshot<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.config
    }
}

/// How a `/config` change was made: `PATCH`, `PUT` (the whole document) or `DELETE` (back to
/// the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Patch,
    Put,
    Reset,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    pub field: String,
    /// The value before: any JSON value (a string, a number, a boolean, an object…).
    #[schema(value_type = Value)]
    pub old: Value,
    /// The value after: any JSON value.
    #[schema(value_type = Value)]
    pub new: Value,
}

/// One accepted change: who, with which client, through which path, when, and old → new for
/// every field it touched.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChangeRecord {
    pub service: String,
    pub revision: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: Role,
    /// The client program: header `x-observastack-client` (`cli`, `console`), else the
    /// User-Agent's product token (`curl`), else `unknown`; lowercase `[a-z0-9._-]{1,32}`.
    pub client: String,
    /// `control-gateway` when the control gateway forwarded the change; `null` for a direct call.
    #[schema(required = true)]
    pub through: Option<String>,
    pub action: ChangeAction,
    pub changes: Vec<FieldChange>,
}

/// The JSON Schema (2020-12) of `T`'s values: what `GET /config/schema` serves, every change is
/// validated against, and the OpenAPI documents carry (`openapi::add_config_schema`).
pub fn json_schema<T: JsonSchema>() -> Result<Value, serde_json::Error> {
    serde_json::to_value(schemars::schema_for!(T))
}

/// How many change records `GET /config/history` can return.
pub const HISTORY_CAPACITY: usize = 500;

/// Holds the live configuration of one service.
pub struct ConfigStore<T: RuntimeConfig> {
    service: String,
    tx: watch::Sender<Arc<Snapshot<T>>>,
    /// Serialises writers so validation, the role check and the swap see one consistent base.
    history: Mutex<VecDeque<ChangeRecord>>,
    events: broadcast::Sender<ChangeRecord>,
    schema: Value,
    validator: jsonschema::Validator,
    metrics: Arc<Metrics>,
}

impl<T: RuntimeConfig> std::fmt::Debug for ConfigStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore").field("service", &self.service).finish_non_exhaustive()
    }
}

impl<T: RuntimeConfig> ConfigStore<T> {
    /// Creates a store holding `initial` at revision 1. Fails if `initial` breaks its own rules.
    pub fn new(service: &str, initial: T, metrics: Arc<Metrics>) -> Result<Arc<Self>, ApiError> {
        let schema = json_schema::<T>().map_err(anyhow::Error::from)?;
        // Draft 7 on purpose: the 2020-12 meta-schema validator costs ~20 MB of resident memory per
        // process, and the schemas schemars emits for our configs use no 2020-12-only keyword.
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(&schema)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("config schema of {service} does not compile: {e}")))?;
        let initial_json = serde_json::to_value(&initial).map_err(anyhow::Error::from)?;
        let config = validate::<T>(&validator, initial_json)?;
        let snapshot = Snapshot { revision: 1, updated_at: Utc::now(), config };
        metrics.config_revision.set(1);
        let (tx, _) = watch::channel(Arc::new(snapshot));
        let (events, _) = broadcast::channel(64);
        Ok(Arc::new(Self {
            service: service.to_owned(),
            tx,
            history: Mutex::new(VecDeque::new()),
            events,
            schema,
            validator,
            metrics,
        }))
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The configuration in force now. Cheap: clones an `Arc`.
    pub fn current(&self) -> Arc<Snapshot<T>> {
        self.tx.borrow().clone()
    }

    /// Wakes on every accepted change; for components that must resize pools and the like.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot<T>>> {
        self.tx.subscribe()
    }

    /// Every accepted change, for reporting to the orchestrator as a timeline event.
    pub fn change_events(&self) -> broadcast::Receiver<ChangeRecord> {
        self.events.subscribe()
    }

    pub fn schema(&self) -> &Value {
        &self.schema
    }

    pub async fn history(&self, limit: usize) -> Vec<ChangeRecord> {
        self.history.lock().await.iter().rev().take(limit).cloned().collect()
    }

    /// Merges `patch` (RFC 7396 JSON merge patch) into the current configuration.
    pub async fn patch(
        &self,
        caller: &Caller,
        origin: &ChangeOrigin,
        patch: Value,
    ) -> Result<Arc<Snapshot<T>>, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::field("(body)", "type", "a config patch must be a JSON object"));
        }
        self.apply(caller, origin, ChangeAction::Patch, |current| {
            // `null` removes a member, so an unknown one would pass the merged document's
            // validation unnoticed: a typo that silently does nothing.
            let unknown = unknown_nulls(&patch, &self.schema, &self.schema, "");
            if !unknown.is_empty() {
                return Err(ApiError::Validation(unknown));
            }
            let mut merged = current.clone();
            json_patch::merge(&mut merged, &patch);
            Ok(merged)
        })
        .await
    }

    /// Replaces the configuration; fields left out take their defaults.
    pub async fn replace(
        &self,
        caller: &Caller,
        origin: &ChangeOrigin,
        document: Value,
    ) -> Result<Arc<Snapshot<T>>, ApiError> {
        if !document.is_object() {
            return Err(ApiError::field("(body)", "type", "a config document must be a JSON object"));
        }
        self.apply(caller, origin, ChangeAction::Put, |_| Ok(document.clone())).await
    }

    /// Resets every field to its default.
    pub async fn reset(&self, caller: &Caller, origin: &ChangeOrigin) -> Result<Arc<Snapshot<T>>, ApiError> {
        let defaults = serde_json::to_value(T::default()).map_err(anyhow::Error::from)?;
        self.apply(caller, origin, ChangeAction::Reset, |_| Ok(defaults.clone())).await
    }

    async fn apply(
        &self,
        caller: &Caller,
        origin: &ChangeOrigin,
        action: ChangeAction,
        build: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Arc<Snapshot<T>>, ApiError> {
        let mut history = self.history.lock().await;
        let current = self.current();
        let current_json = serde_json::to_value(&current.config).map_err(anyhow::Error::from)?;
        let outcome = build(&current_json).and_then(|candidate| self.decide(caller, &current_json, candidate));
        let (config, changes) = match outcome {
            Ok(ok) => ok,
            Err(err) => {
                let label = if matches!(err, ApiError::Forbidden { .. }) { "forbidden" } else { "rejected" };
                self.metrics.config_changes.with_label_values(&[label]).inc();
                tracing::info!(
                    actor = %caller.subject,
                    role = %caller.role,
                    client = %origin.client,
                    through = origin.through.as_deref(),
                    ?action,
                    outcome = label,
                    error = %err,
                    "config change refused"
                );
                return Err(err);
            }
        };
        if changes.is_empty() {
            return Ok(current);
        }
        let revision = current.revision + 1;
        let record = ChangeRecord {
            service: self.service.clone(),
            revision,
            at: Utc::now(),
            actor: caller.subject.clone(),
            role: caller.role,
            client: origin.client.clone(),
            through: origin.through.clone(),
            action,
            changes,
        };
        let snapshot = Arc::new(Snapshot { revision, updated_at: record.at, config });
        self.tx.send_replace(snapshot.clone());
        self.metrics.config_revision.set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.metrics.config_changes.with_label_values(&["applied"]).inc();
        tracing::info!(
            actor = %record.actor,
            role = %record.role,
            client = %record.client,
            through = record.through.as_deref(),
            revision,
            action = ?action,
            changes = %serde_json::to_string(&record.changes).unwrap_or_default(),
            "config changed"
        );
        if history.len() == HISTORY_CAPACITY {
            history.pop_front();
        }
        history.push_back(record.clone());
        // Nobody listening is fine: the history endpoint still has it.
        let _ = self.events.send(record);
        Ok(snapshot)
    }

    /// Validates `candidate` and works out which fields change; nothing is published here.
    fn decide(&self, caller: &Caller, current: &Value, candidate: Value) -> Result<(T, Vec<FieldChange>), ApiError> {
        let config = validate::<T>(&self.validator, candidate)?;
        let normalized = serde_json::to_value(&config).map_err(anyhow::Error::from)?;
        let changes = diff(current, &normalized);
        if !caller.may(Role::Instructor) {
            let denied: Vec<FieldError> = changes
                .iter()
                .filter(|c| is_instructor_only::<T>(&c.field))
                .map(|c| {
                    FieldError::new(&c.field, "role", format!("only the instructor role may change `{}`", c.field))
                })
                .collect();
            if !denied.is_empty() {
                let names: Vec<String> = denied.iter().map(|e| format!("`{}`", e.field)).collect();
                return Err(ApiError::Forbidden {
                    message: format!(
                        "role `{}` may not change {}: {}",
                        caller.role,
                        names.join(", "),
                        T::instructor_only_reason()
                    ),
                    fields: denied,
                });
            }
        }
        Ok((config, changes))
    }
}

fn is_instructor_only<T: RuntimeConfig>(field: &str) -> bool {
    T::instructor_only()
        .iter()
        .any(|prefix| field == *prefix || field.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')))
}

/// Schema first (every violation, with its path and keyword), then the type's own checks.
fn validate<T: RuntimeConfig>(validator: &jsonschema::Validator, candidate: Value) -> Result<T, ApiError> {
    let mut errors: Vec<FieldError> = validator.iter_errors(&candidate).flat_map(|err| schema_error(&err)).collect();
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        return Err(ApiError::Validation(errors));
    }
    let config: T = crate::body::parse_json(candidate.to_string().as_bytes())?;
    let errors = config.check();
    if errors.is_empty() { Ok(config) } else { Err(ApiError::Validation(errors)) }
}

fn schema_error(err: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    let field = pointer_to_dotted(err.instance_path.as_str());
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = &err.kind {
        return unexpected
            .iter()
            .map(|name| {
                let path = if field == "(body)" { name.clone() } else { format!("{field}.{name}") };
                FieldError::new(path, "unknown_field", format!("unknown field `{name}`"))
            })
            .collect();
    }
    let rule = err.schema_path.as_str().rsplit('/').next().unwrap_or("schema").to_owned();
    vec![FieldError::new(field, rule, err.to_string())]
}

/// The members of `patch` set to `null` that their place in `schema` (at `node`, under the
/// root schema `root`) does not declare, as `unknown_field` errors.
fn unknown_nulls(patch: &Value, node: &Value, root: &Value, path: &str) -> Vec<FieldError> {
    let Value::Object(members) = patch else { return Vec::new() };
    let mut errors = Vec::new();
    for (key, value) in members {
        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match member_schema(node, key, root) {
            Some(sub) => errors.extend(unknown_nulls(value, sub, root, &child)),
            None if value.is_null() => {
                errors.push(FieldError::new(child, "unknown_field", format!("unknown field `{key}`")));
            }
            None => {}
        }
    }
    errors
}

/// The schema of member `key` of an object described by `node`, or `None` when the object
/// refuses members it does not declare. Anything not an object schema declares everything.
fn member_schema<'a>(node: &'a Value, key: &str, root: &'a Value) -> Option<&'a Value> {
    static ANYTHING: Value = Value::Bool(true);
    let node = resolve(node, root);
    if let Some(sub) = node.get("properties").and_then(|p| p.get(key)) {
        return Some(resolve(sub, root));
    }
    match node.get("additionalProperties") {
        Some(Value::Bool(false)) => None,
        Some(sub @ Value::Object(_)) => Some(resolve(sub, root)),
        _ => Some(&ANYTHING),
    }
}

/// Follows a `$ref` into the root schema's `$defs` (what schemars writes).
fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    node.get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| root.get("$defs").and_then(|defs| defs.get(name)))
        .unwrap_or(node)
}

/// `/db/pool_size` → `db.pool_size`; the empty pointer is the whole body.
fn pointer_to_dotted(pointer: &str) -> String {
    if pointer.is_empty() {
        return "(body)".to_owned();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Field-level differences with dotted paths. Objects present on both sides are walked; a key
/// present on one side only (a map entry added or removed) is one change at that key.
fn diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    out
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
    if let (Value::Object(a), Value::Object(b)) = (old, new) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) => diff_into(&child, x, y, out),
                (x, y) => out.push(FieldChange {
                    field: child,
                    old: x.cloned().unwrap_or(Value::Null),
                    new: y.cloned().unwrap_or(Value::Null),
                }),
            }
        }
    } else if old != new {
        out.push(FieldChange { field: path.to_owned(), old: old.clone(), new: new.clone() });
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub service: String,
    pub revision: u64,
    pub updated_at: DateTime<Utc>,
    /// The current values, shaped as `GET /config/schema` describes.
    #[schema(value_type = Object)]
    pub values: Value,
    /// Where the JSON Schema of `values` is served.
    pub schema: String,
}

impl<T: RuntimeConfig> ConfigStore<T> {
    fn view(&self, snapshot: &Snapshot<T>) -> Result<ConfigView, ApiError> {
        Ok(ConfigView {
            service: self.service.clone(),
            revision: snapshot.revision,
            updated_at: snapshot.updated_at,
            values: serde_json::to_value(&snapshot.config).map_err(anyhow::Error::from)?,
            schema: "/config/schema".to_owned(),
        })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// How many records, newest first: 100 unless given; the history keeps the last 500.
    #[param(minimum = 0, maximum = 500)]
    pub limit: Option<usize>,
}

/// `/config` routes for `store`, guarded by `keys`: any valid token reads, any role writes,
/// and the type's instructor-only fields additionally need `instructor`.
pub fn router<T: RuntimeConfig>(store: Arc<ConfigStore<T>>, keys: Arc<JwtKeys>) -> Router {
    Router::new()
        .route("/config", get(get_config::<T>).patch(patch_config::<T>).put(put_config::<T>).delete(reset_config::<T>))
        .route("/config/schema", get(get_schema::<T>))
        .route("/config/history", get(get_history::<T>))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(keys, require_token))
        .with_state(store)
}

async fn get_config<T: RuntimeConfig>(State(store): State<Arc<ConfigStore<T>>>) -> Result<Json<ConfigView>, ApiError> {
    Ok(Json(store.view(&store.current())?))
}

async fn get_schema<T: RuntimeConfig>(State(store): State<Arc<ConfigStore<T>>>) -> Json<Value> {
    Json(store.schema().clone())
}

async fn get_history<T: RuntimeConfig>(
    State(store): State<Arc<ConfigStore<T>>>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ChangeRecord>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if limit > HISTORY_CAPACITY {
        return Err(ApiError::field("limit", "maximum", format!("must be at most {HISTORY_CAPACITY}, got {limit}")));
    }
    Ok(Json(store.history(limit).await))
}

async fn patch_config<T: RuntimeConfig>(
    State(store): State<Arc<ConfigStore<T>>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<Value>,
) -> Result<Json<ConfigView>, ApiError> {
    let snapshot = store.patch(&caller, &ChangeOrigin::from_headers(&headers), patch).await?;
    Ok(Json(store.view(&snapshot)?))
}

async fn put_config<T: RuntimeConfig>(
    State(store): State<Arc<ConfigStore<T>>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(document): JsonBody<Value>,
) -> Result<Json<ConfigView>, ApiError> {
    let snapshot = store.replace(&caller, &ChangeOrigin::from_headers(&headers), document).await?;
    Ok(Json(store.view(&snapshot)?))
}

async fn reset_config<T: RuntimeConfig>(
    State(store): State<Arc<ConfigStore<T>>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<ConfigView>, ApiError> {
    let snapshot = store.reset(&caller, &ChangeOrigin::from_headers(&headers)).await?;
    Ok(Json(store.view(&snapshot)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_reports_leaves_with_dotted_paths() {
        let changes = diff(&json!({"db": {"pool_size": 10}, "x": 1}), &json!({"db": {"pool_size": 2}, "x": 1}));
        assert_eq!(changes, vec![FieldChange { field: "db.pool_size".into(), old: json!(10), new: json!(2) }]);
    }

    fn origin(pairs: &[(&'static str, &str)]) -> ChangeOrigin {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            let value =
                axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|e| panic!("{value}: {e}"));
            headers.append(*name, value);
        }
        ChangeOrigin::from_headers(&headers)
    }

    #[test]
    fn the_client_comes_from_its_header_else_the_user_agent_else_is_unknown() {
        assert_eq!(origin(&[(CLIENT_HEADER, "cli"), ("user-agent", "curl/8.5.0")]).client, "cli");
        assert_eq!(origin(&[("user-agent", "curl/8.5.0")]).client, "curl");
        assert_eq!(origin(&[("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")]).client, "mozilla");
        assert_eq!(origin(&[]).client, "unknown");
    }

    #[test]
    fn a_client_name_outside_the_allowed_alphabet_or_length_is_ignored() {
        let agent = ("user-agent", "curl/8.5.0");
        for bad in ["CLI", "my client", "a\"b", "", &"x".repeat(33), "émoji"] {
            assert_eq!(origin(&[(CLIENT_HEADER, bad), agent]).client, "curl", "{bad:?}");
        }
        assert_eq!(origin(&[(CLIENT_HEADER, &"x".repeat(32))]).client, "x".repeat(32));
        assert_eq!(origin(&[(CLIENT_HEADER, "console-2.0_beta")]).client, "console-2.0_beta");
        assert_eq!(origin(&[("user-agent", "<script>/1")]).client, "unknown");
        assert_eq!(origin(&[("user-agent", &format!("{}/1", "a".repeat(40)))]).client, "unknown");
    }

    #[test]
    fn through_is_the_control_gateway_or_nothing() {
        assert_eq!(origin(&[(THROUGH_HEADER, "control-gateway")]).through.as_deref(), Some("control-gateway"));
        for other in ["user-gateway", "Control-Gateway", "control-gateway "] {
            assert_eq!(origin(&[(THROUGH_HEADER, other)]).through, None, "{other:?}");
        }
        assert_eq!(origin(&[]).through, None);
    }

    #[test]
    fn json_pointer_becomes_dotted_path() {
        assert_eq!(
            pointer_to_dotted("/faults/POST ~1api~1checkout/latency_ms"),
            "faults.POST /api/checkout.latency_ms"
        );
        assert_eq!(pointer_to_dotted(""), "(body)");
    }
}
