//! OpenAPI description of the routes every service shares (`/healthz`, `/readyz`,
//! `/metrics`, `/config*`). Each service merges it into its own document.
//!
//! The handlers are generic over the config type, which `#[utoipa::path]` cannot describe, so
//! the paths are declared on these documentation-only functions instead, and a service's own
//! config schema goes into its document afterwards ([`add_config_schema`]).

use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::config::{ChangeRecord, ConfigView, FieldChange};
use crate::error::{ErrorBody, ErrorDetail, FieldError};

#[derive(OpenApi)]
#[openapi(
    paths(healthz, readyz, metrics, get_config, get_schema, patch_config, put_config, reset_config, get_history),
    components(schemas(ConfigView, ChangeRecord, FieldChange, ErrorBody, ErrorDetail, FieldError, crate::auth::Role, crate::config::ChangeAction)),
    modifiers(&BearerAuth),
)]
struct InternalApi;

/// The shared internal routes as an OpenAPI document.
pub fn internal_api() -> utoipa::openapi::OpenApi {
    InternalApi::openapi()
}

/// Puts a service's config schema (`config::json_schema`, what `GET /config/schema` serves) into
/// its OpenAPI document, given as JSON: `PUT /config` takes it, `PATCH /config` a merge patch of
/// it, and `ConfigView.values` is it. Its `$defs` become component schemas; a name already taken
/// by a different schema is an error. Without this a client (or a fuzzer) would learn that any
/// object goes, while the service rejects unknown fields and out-of-range values.
pub fn add_config_schema(doc: &mut Value, schema: Value) -> Result<(), String> {
    let Value::Object(mut root) = schema else { return Err("a config schema must be a JSON object".to_owned()) };
    root.remove("$schema");
    let defs = match root.remove("$defs") {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    let name = root.get("title").and_then(Value::as_str).unwrap_or("Config").to_owned();
    let root = Value::Object(root);
    let patch = merge_patch_schema(&root, &defs, true);
    let patch_name = format!("{name}Patch");
    let mut components: Vec<(String, Value)> = defs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    components.push((name.clone(), root));
    components.push((patch_name.clone(), patch));
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or("the document has no components.schemas")?;
    for (key, mut value) in components {
        rewrite_refs(&mut value);
        match schemas.get(&key) {
            Some(existing) if *existing != value => {
                return Err(format!("component schema `{key}` already exists and differs from the config's"));
            }
            _ => {
                schemas.insert(key, value);
            }
        }
    }
    if let Some(values) = schemas.get_mut("ConfigView").and_then(|v| v.pointer_mut("/properties/values")) {
        *values = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "description": "The current values, shaped as `GET /config/schema` describes."
        });
    }
    for (method, component) in [("put", &name), ("patch", &patch_name)] {
        let pointer = format!("/paths/~1config/{method}/requestBody/content/application~1json/schema");
        let body = doc.pointer_mut(&pointer).ok_or_else(|| format!("the document has no {method} /config body"))?;
        *body = json!({ "$ref": format!("#/components/schemas/{component}") });
    }
    Ok(())
}

/// Spells the link objects of `doc`'s responses as OpenAPI does (`operationId`, `operationRef`,
/// `requestBody`): utoipa 5 writes the Rust field names, which no client follows.
pub fn fix_link_names(doc: &mut Value) {
    let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (from, to) in
            [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
        {
            if let Some(value) = link.remove(from) {
                link.insert(to.to_owned(), value);
            }
        }
    }
}

/// The schema of an RFC 7396 merge patch of documents valid under `node`: in an object, every
/// property may be left out, and one that may be absent from the result may also be `null`
/// (which removes it, so it takes its default). Arrays and scalars are replaced whole, so they
/// keep their schema. References into `defs` are inlined where the patch differs.
fn merge_patch_schema(node: &Value, defs: &Map<String, Value>, merged: bool) -> Value {
    let Value::Object(map) = node else { return node.clone() };
    if let Some(target) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"))
        && let Some(Value::Object(def)) = defs.get(target)
        && merged
        && is_object_schema(def)
    {
        let mut resolved = def.clone();
        for (key, value) in map {
            if key != "$ref" {
                resolved.insert(key.clone(), value.clone());
            }
        }
        return merge_patch_schema(&Value::Object(resolved), defs, merged);
    }
    if !merged || !is_object_schema(map) {
        return node.clone();
    }
    let mut out = map.clone();
    let required: Vec<&str> =
        map.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if let Some(Value::Object(properties)) = map.get("properties") {
        let patched = properties
            .iter()
            .map(|(key, schema)| {
                let inner = merge_patch_schema(schema, defs, true);
                (key.clone(), if required.contains(&key.as_str()) { inner } else { or_null(inner) })
            })
            .collect();
        out.insert("properties".to_owned(), Value::Object(patched));
    }
    if let Some(extra @ Value::Object(_)) = map.get("additionalProperties") {
        out.insert("additionalProperties".to_owned(), or_null(merge_patch_schema(extra, defs, true)));
    }
    out.remove("required");
    out.remove("default");
    Value::Object(out)
}

fn is_object_schema(map: &Map<String, Value>) -> bool {
    map.get("type").and_then(Value::as_str) == Some("object")
}

/// `schema` or `null`, the description kept outside so it still reads first.
fn or_null(schema: Value) -> Value {
    let Value::Object(mut map) = schema else { return schema };
    let nullable = match map.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    if nullable {
        return Value::Object(map);
    }
    let description = map.remove("description");
    let mut wrapper = Map::new();
    if let Some(description) = description {
        wrapper.insert("description".to_owned(), description);
    }
    wrapper.insert("anyOf".to_owned(), json!([Value::Object(map), { "type": "null" }]));
    Value::Object(wrapper)
}

/// `#/$defs/X` (schemars) → `#/components/schemas/X` (OpenAPI), at any depth.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                *target = format!("#/components/schemas/{name}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "internal", responses((status = 200, description = "Alive")))]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: dependencies (e.g. PostgreSQL) are reachable.
#[utoipa::path(get, path = "/readyz", tag = "internal", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "A dependency is unreachable; `reason` says which"),
))]
#[allow(dead_code)]
fn readyz() {}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "internal", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// Current runtime configuration and its revision.
#[utoipa::path(get, path = "/config", tag = "config", security(("bearer" = [])), responses(
    (status = 200, body = ConfigView),
    (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
))]
#[allow(dead_code)]
fn get_config() {}

/// JSON Schema (2020-12) of the configuration values: types, ranges, enums, defaults.
#[utoipa::path(get, path = "/config/schema", tag = "config", security(("bearer" = [])), responses(
    (status = 200, description = "JSON Schema", body = Object),
    (status = 401, body = ErrorBody),
))]
#[allow(dead_code)]
fn get_schema() {}

/// Partial change (RFC 7396 merge patch), validated whole and applied atomically.
#[utoipa::path(patch, path = "/config", tag = "config", security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json", description = "Merge patch of the values"),
    responses(
        (status = 200, body = ConfigView),
        (status = 400, body = ErrorBody, description = "Invalid JSON, unknown field, wrong type or out-of-range value; `details` names each field and rule"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The role may not change a field: instructor-only fields (the faults; every field of the runner and the control gateway) need `instructor`; `details` names each, the message says why"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn patch_config() {}

/// Replaces the configuration; omitted fields take their defaults.
#[utoipa::path(put, path = "/config", tag = "config", security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, body = ConfigView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn put_config() {}

/// Resets every field to its default.
#[utoipa::path(delete, path = "/config", tag = "config", security(("bearer" = [])), responses(
    (status = 200, body = ConfigView),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
#[allow(dead_code)]
fn reset_config() {}

/// Accepted changes, newest first: who, with which client, through which path, when, old → new.
#[utoipa::path(get, path = "/config/history", tag = "config", security(("bearer" = [])),
    params(crate::config::HistoryQuery),
    responses(
        (status = 200, body = Vec<ChangeRecord>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
#[allow(dead_code)]
fn get_history() {}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        db: Db,
        steps: Vec<Step>,
        limit: Option<u32>,
    }

    #[derive(Serialize, Deserialize, JsonSchema, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Db {
        pool_size: u32,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Step {
        at: u32,
    }

    fn with_sample() -> Value {
        let mut doc = serde_json::to_value(internal_api()).unwrap_or_default();
        let schema = crate::config::json_schema::<Sample>().unwrap_or_default();
        add_config_schema(&mut doc, schema).unwrap_or_else(|e| panic!("{e}"));
        doc
    }

    #[test]
    fn put_takes_the_config_schema_and_patch_a_merge_patch_of_it() {
        let doc = with_sample();
        let body = |method: &str| {
            doc.pointer(&format!("/paths/~1config/{method}/requestBody/content/application~1json/schema/$ref")).cloned()
        };
        assert_eq!(body("put"), Some(json!("#/components/schemas/Sample")));
        assert_eq!(body("patch"), Some(json!("#/components/schemas/SamplePatch")));
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Sample"]["additionalProperties"], false);
        assert_eq!(schemas["Sample"]["properties"]["db"]["$ref"], "#/components/schemas/Db");
        assert_eq!(schemas["ConfigView"]["properties"]["values"]["$ref"], "#/components/schemas/Sample");

        let patch = &schemas["SamplePatch"];
        assert_eq!(patch["additionalProperties"], false, "unknown fields stay refused");
        // A nested object is merged: each of its fields may be left out, or null to take its default.
        let db = &patch["properties"]["db"];
        assert_eq!(db["anyOf"][1], json!({"type": "null"}));
        assert_eq!(db["anyOf"][0]["properties"]["pool_size"]["anyOf"][1], json!({"type": "null"}));
        assert!(db["anyOf"][0].get("required").is_none());
        // An array is replaced whole, so its items keep their full schema.
        assert_eq!(patch["properties"]["steps"]["anyOf"][0]["items"]["$ref"], "#/components/schemas/Step");
        assert_eq!(schemas["Step"]["required"], json!(["at"]));
        // Already nullable: not wrapped again.
        assert_eq!(patch["properties"]["limit"]["type"], json!(["integer", "null"]));
    }

    #[test]
    fn links_get_their_openapi_names() {
        let mut doc = json!({"paths": {"/a": {"post": {"responses": {"201": {"links": {"Next": {
            "operation_id": "b", "request_body": {"id": "$response.body#/id"}, "parameters": {}
        }}}}}}}});
        fix_link_names(&mut doc);
        assert_eq!(
            doc["paths"]["/a"]["post"]["responses"]["201"]["links"]["Next"],
            json!({"operationId": "b", "requestBody": {"id": "$response.body#/id"}, "parameters": {}})
        );
    }

    #[test]
    fn a_config_type_named_like_another_component_is_an_error() {
        let mut doc = serde_json::to_value(internal_api()).unwrap_or_default();
        let schema = json!({"title": "Sample", "type": "object", "$defs": {"ErrorBody": {"type": "string"}}});
        let err = add_config_schema(&mut doc, schema).err().unwrap_or_default();
        assert!(err.contains("ErrorBody"), "{err}");
    }
}
