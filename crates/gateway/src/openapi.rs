//! OpenAPI documents of the public listener of each role. The user role's routes are the
//! shop's, passed through unchanged, so they are listed from [`USER_ROUTES`] rather than
//! described twice: [`document`] takes each one's description from the shop's own document
//! (and the control role's orchestrator and console routes from the orchestrator's), adding
//! what the gateway itself may answer.

use serde_json::{Map, Value, json};
use service_kit::config::{ChangeRecord, ConfigView};
use service_kit::error::ErrorBody;
use utoipa::OpenApi;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Required, ResponseBuilder};

use crate::routes::{self, CONSOLE_ROUTES, ORCHESTRATOR_ROUTES, USER_ROUTES, control, observability};
use crate::settings::GatewayRole;

#[derive(OpenApi)]
#[openapi(
    info(title = "ObservaStack user gateway", description = "The shop's business routes, passed through to the shop."),
    paths(routes::healthz),
    components(schemas(
        routes::Health,
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError
    ))
)]
struct UserApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "ObservaStack control gateway", description = "Token-guarded operations on the stack's services."),
    paths(
        routes::healthz,
        control::list_services,
        get_service_config,
        patch_service_config,
        put_service_config,
        reset_service_config,
        get_service_config_schema,
        get_service_config_history,
        control::service_metrics
    ),
    components(schemas(
        routes::Health,
        routes::ServiceList,
        routes::ServiceLink,
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError,
        ConfigView,
        ChangeRecord,
        service_kit::config::FieldChange,
        service_kit::config::ChangeAction,
        service_kit::Role,
    )),
    modifiers(&BearerAuth),
)]
struct ControlApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "ObservaStack observability gateway", description = "Read-only views of the stack's services."),
    paths(
        routes::healthz,
        observability::list_services,
        observability::service_metrics,
        observability::service_health
    ),
    components(schemas(
        routes::Health,
        routes::ServiceList,
        routes::ServiceLink,
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError,
    ))
)]
struct ObservabilityApi;

/// The OpenAPI document of `role`'s public routes.
pub fn openapi(role: GatewayRole) -> utoipa::openapi::OpenApi {
    match role {
        GatewayRole::User => {
            let mut doc = UserApi::openapi();
            add_pass_through_routes(&mut doc);
            doc
        }
        GatewayRole::Control => {
            let mut doc = ControlApi::openapi();
            add_orchestrator_routes(&mut doc);
            doc
        }
        GatewayRole::Observability => ObservabilityApi::openapi(),
    }
}

fn add_pass_through_routes(doc: &mut utoipa::openapi::OpenApi) {
    add_forwarded_routes(
        doc,
        USER_ROUTES,
        "shop",
        "Forwarded unchanged (method, path, query, body) to the shop, whose answer is passed back. \
         The gateway itself may answer 413 (body over 1 MiB), 502 (shop unreachable), \
         503 with Retry-After (upstream pool saturated) or 504 (shop too slow).",
    );
}

fn add_orchestrator_routes(doc: &mut utoipa::openapi::OpenApi) {
    add_forwarded_routes(
        doc,
        ORCHESTRATOR_ROUTES,
        "orchestrator",
        "Needs a token (Bearer header or the `observastack_token` cookie). Forwarded unchanged to the \
         orchestrator, whose answer is passed back (see docs/orchestrator.md and orchestrator.json); \
         `GET /api/ws` is a WebSocket tunnelled once the orchestrator accepts the handshake.",
    );
    add_forwarded_routes(
        doc,
        CONSOLE_ROUTES,
        "orchestrator",
        "The web console (docs/console.md), forwarded to the orchestrator without a token: its built \
         assets, `GET /console/login?code=…` (the one-time login URL `observastack up` prints; sets the \
         HttpOnly, SameSite=Strict `observastack_token` cookie and redirects to `/console/`), \
         `GET /console/settings.json` and `POST /console/logout`. Requests authenticated by the cookie \
         must come from this origin, and state-changing ones must carry `x-observastack-csrf: 1`.",
    );
}

/// `role`'s public document as JSON, every forwarded route described by the upstream's own
/// document (`shop`, `orchestrator`: theirs as JSON) plus what the gateway itself may answer.
pub fn document(role: GatewayRole, shop: &Value, orchestrator: &Value) -> Result<Value, String> {
    let mut doc = serde_json::to_value(openapi(role)).map_err(|e| e.to_string())?;
    let unreachable = |name: &str| (502, format!("The {name} is unreachable"));
    let saturated = (503, "The gateway's upstream pool is saturated; see Retry-After".to_owned());
    let slow = |name: &str| (504, format!("The {name} did not answer within the gateway's `upstream.timeout_ms`"));
    match role {
        GatewayRole::User => {
            let answers =
                [(413, "Body over the gateway's 1 MiB".to_owned()), unreachable("shop"), saturated, slow("shop")];
            adopt(&mut doc, shop, "shop", USER_ROUTES, &answers)?;
        }
        GatewayRole::Control => {
            let csrf = (
                403,
                "A request authenticated by the console's cookie came from another origin, or changes state \
                 without `x-observastack-csrf`"
                    .to_owned(),
            );
            let api = [csrf.clone(), unreachable("orchestrator"), saturated.clone(), slow("orchestrator")];
            adopt(&mut doc, orchestrator, "orchestrator", ORCHESTRATOR_ROUTES, &api)?;
            let console = [csrf, unreachable("orchestrator"), saturated, slow("orchestrator")];
            adopt(&mut doc, orchestrator, "orchestrator", CONSOLE_ROUTES, &console)?;
        }
        GatewayRole::Observability => {}
    }
    Ok(doc)
}

/// Replaces the placeholder of each of `routes` in `doc` with `upstream`'s operation, adds
/// `answers` (status, description: an `ErrorBody` the gateway sends) and copies the schemas
/// the operations use.
fn adopt(
    doc: &mut Value,
    upstream: &Value,
    name: &str,
    routes: &[&str],
    answers: &[(u16, String)],
) -> Result<(), String> {
    let mut wanted = Vec::new();
    for route in routes {
        let (method, path) = routes::split_route(route).ok_or_else(|| format!("bad route `{route}`"))?;
        let method = method.as_str().to_ascii_lowercase();
        let mut operation = upstream
            .get("paths")
            .and_then(|p| p.get(path))
            .and_then(|p| p.get(&method))
            .cloned()
            .ok_or_else(|| format!("the {name}'s document has no `{route}`"))?;
        let note = format!("Forwarded unchanged to the {name}, whose answer is passed back.");
        let description = match operation.get("description").and_then(Value::as_str) {
            Some(text) => format!("{text}\n\n{note}"),
            None => note,
        };
        operation["description"] = Value::String(description);
        // The upstream's schemas; those of the gateway's own answers are in this document.
        refs_in(&operation, &mut wanted);
        let has_body = operation.get("requestBody").is_some();
        let responses = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("`{route}` of the {name} has no responses"))?;
        for (status, text) in answers {
            if *status == 413 && !has_body {
                continue;
            }
            add_error_response(responses, *status, text);
        }
        let slot = doc
            .pointer_mut(&format!("/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1")))
            .ok_or_else(|| format!("this gateway's document lists no `{route}`"))?;
        *slot = operation;
    }
    copy_schemas(doc, upstream, wanted)
}

/// Adds the gateway's `ErrorBody` answer for `status`: a new response, or JSON beside what the
/// upstream says for the same status (e.g. the console's HTML 503).
fn add_error_response(responses: &mut Map<String, Value>, status: u16, text: &str) {
    let body = json!({ "schema": { "$ref": "#/components/schemas/ErrorBody" } });
    match responses.get_mut(&status.to_string()) {
        Some(existing) => {
            let content = existing.as_object_mut().map(|r| r.entry("content").or_insert_with(|| json!({})));
            if let Some(Value::Object(content)) = content {
                content.entry("application/json").or_insert(body);
            }
            if let Some(Value::String(description)) = existing.get_mut("description") {
                description.push_str(&format!("; or, from the gateway: {text}"));
            }
        }
        None => {
            responses
                .insert(status.to_string(), json!({ "description": text, "content": { "application/json": body } }));
        }
    }
}

/// Copies the component schemas `names` (and those they use) from `from` into `doc`; the same
/// name must not mean two different schemas.
fn copy_schemas(doc: &mut Value, from: &Value, mut names: Vec<String>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = names.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = from
            .pointer(&format!("/components/schemas/{name}"))
            .ok_or_else(|| format!("no component schema `{name}` to copy"))?;
        refs_in(schema, &mut names);
        let schemas = doc
            .as_object_mut()
            .ok_or("the document is not an object")?
            .entry("components")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("components is not an object")?
            .entry("schemas")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("components.schemas is not an object")?;
        match schemas.get(&name) {
            Some(existing) if existing != schema => {
                return Err(format!("component schema `{name}` differs between documents"));
            }
            Some(_) => {}
            None => {
                schemas.insert(name, schema.clone());
            }
        }
    }
    Ok(())
}

/// The component schema names `value` refers to, at any depth.
fn refs_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) =
                map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(name.to_owned());
            }
            map.values().for_each(|v| refs_in(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs_in(v, out)),
        _ => {}
    }
}

/// Routes the gateway forwards without interpreting them, described by reference to `upstream`
/// until [`document`] puts the upstream's own description in their place.
fn add_forwarded_routes(doc: &mut utoipa::openapi::OpenApi, list: &[&str], upstream: &str, description: &str) {
    for route in list {
        let Some((method, path)) = routes::split_route(route) else { continue };
        let Some(method) = http_method(&method) else { continue };
        let mut operation = OperationBuilder::new()
            .tag(upstream)
            .summary(Some(format!("{route} (passed through to the {upstream})")))
            .description(Some(description))
            .response("default", ResponseBuilder::new().description(format!("The {upstream}'s answer")).build());
        for name in path_params(path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        doc.paths.add_path_operation(path, vec![method], operation);
    }
}

fn path_params(template: &str) -> impl Iterator<Item = &str> {
    template.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn http_method(method: &http::Method) -> Option<HttpMethod> {
    Some(match *method {
        http::Method::GET => HttpMethod::Get,
        http::Method::POST => HttpMethod::Post,
        http::Method::PUT => HttpMethod::Put,
        http::Method::PATCH => HttpMethod::Patch,
        http::Method::DELETE => HttpMethod::Delete,
        http::Method::HEAD => HttpMethod::Head,
        _ => return None,
    })
}

/// A service's current configuration (the service's own `GET /config`).
#[utoipa::path(get, path = "/api/services/{service}/config", tag = "control", security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop")),
    responses(
        (status = 200, body = ConfigView, description = "The service's answer"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "A cookie request from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn get_service_config() {}

/// Changes some of a service's values (an RFC 7396 merge patch), forwarded with the caller's
/// token; the service validates the result against its `config/schema` and checks the role.
#[utoipa::path(patch, path = "/api/services/{service}/config", tag = "control", security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop")),
    request_body(content = Object, content_type = "application/json", description = "A merge patch of the service's values: its own document (e.g. shop.json) or `config/schema` says which"),
    responses(
        (status = 200, body = ConfigView, description = "The service's answer"),
        (status = 400, body = ErrorBody, description = "Rejected change; `details` names each field and rule"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "The role may not change a field (the message says why), or a cookie request without `x-observastack-csrf` or from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 413, body = ErrorBody, description = "Body over the service's 64 KiB"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn patch_service_config() {}

/// Replaces a service's values (left-out fields take their defaults), forwarded like `PATCH`.
#[utoipa::path(put, path = "/api/services/{service}/config", tag = "control", security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop")),
    request_body(content = Object, content_type = "application/json", description = "The service's values: its own document (e.g. shop.json) or `config/schema` says which"),
    responses(
        (status = 200, body = ConfigView, description = "The service's answer"),
        (status = 400, body = ErrorBody, description = "Rejected change; `details` names each field and rule"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "The role may not change a field (the message says why), or a cookie request without `x-observastack-csrf` or from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 413, body = ErrorBody, description = "Body over the service's 64 KiB"),
        (status = 415, body = ErrorBody, description = "The body is not `application/json`"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn put_service_config() {}

/// Resets every value of a service to its default.
#[utoipa::path(delete, path = "/api/services/{service}/config", tag = "control", security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop")),
    responses(
        (status = 200, body = ConfigView, description = "The service's answer"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "The role may not change a field, or a cookie request without `x-observastack-csrf` or from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn reset_service_config() {}

/// JSON Schema (2020-12) of a service's values: types, ranges, enums, defaults.
#[utoipa::path(get, path = "/api/services/{service}/config/schema", tag = "control", security(("bearer" = [])),
    params(("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop")),
    responses(
        (status = 200, body = Object, description = "The service's JSON Schema"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "A cookie request from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn get_service_config_schema() {}

/// A service's accepted changes, newest first.
#[utoipa::path(get, path = "/api/services/{service}/config/history", tag = "control", security(("bearer" = [])),
    params(
        ("service" = String, Path, description = "Service name, see `GET /api/services`", example = "shop"),
        service_kit::config::HistoryQuery,
    ),
    responses(
        (status = 200, body = Vec<ChangeRecord>, description = "The service's answer"),
        (status = 400, body = ErrorBody, description = "Bad `limit`"),
        (status = 401, body = ErrorBody, description = "Missing, forged or expired token"),
        (status = 403, body = ErrorBody, description = "A cookie request from another origin"),
        (status = 404, body = ErrorBody, description = "Unknown service"),
        (status = 502, body = ErrorBody, description = "The service is unreachable"),
        (status = 503, body = ErrorBody, description = "The gateway's upstream pool is saturated; see Retry-After"),
        (status = 504, body = ErrorBody, description = "The service did not answer in time"),
    ))]
#[allow(dead_code)]
fn get_service_config_history() {}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_document_lists_every_user_route() {
        let doc = openapi(GatewayRole::User);
        for route in USER_ROUTES {
            let (_, path) = routes::split_route(route).unwrap_or_else(|| panic!("{route}"));
            assert!(doc.paths.paths.contains_key(path), "{route} missing");
        }
        assert!(!doc.paths.paths.contains_key("/config"));
    }

    #[test]
    fn control_document_has_config_routes_and_bearer_auth() {
        let doc = openapi(GatewayRole::Control);
        assert!(doc.paths.paths.contains_key("/api/services/{service}/config"));
        for route in ORCHESTRATOR_ROUTES {
            let (_, path) = routes::split_route(route).unwrap_or_else(|| panic!("{route}"));
            assert!(doc.paths.paths.contains_key(path), "{route} missing");
        }
        assert!(doc.components.as_ref().is_some_and(|c| c.security_schemes.contains_key("bearer")));
    }

    #[test]
    fn the_orchestrator_routes_are_every_control_route_outside_services() {
        // Found by the contract run: `GET /api/scenarios` was left out of the control document.
        let expected: Vec<&str> =
            routes::CONTROL_ROUTES.iter().copied().filter(|r| !r.contains(" /api/services")).collect();
        assert_eq!(ORCHESTRATOR_ROUTES, expected);
    }

    /// A stand-in upstream document with `routes`, each answering 200 with the schema `Thing`.
    fn upstream(routes: &[&str]) -> Value {
        let mut paths = Map::new();
        for route in routes {
            let (method, path) = routes::split_route(route).unwrap_or_else(|| panic!("{route}"));
            let operation = json!({
                "operationId": format!("op {route}"),
                "responses": { "200": { "description": "ok", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Thing" } } } } }
            });
            let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
            entry[method.as_str().to_ascii_lowercase()] = operation;
        }
        json!({ "paths": paths, "components": { "schemas": {
            "Thing": { "type": "object", "properties": { "part": { "$ref": "#/components/schemas/Part" } } },
            "Part": { "type": "string" },
            "Unused": { "type": "string" }
        } } })
    }

    #[test]
    fn the_user_document_takes_the_shops_operations_and_adds_the_gateways_answers() {
        let shop = upstream(USER_ROUTES);
        let doc = document(GatewayRole::User, &shop, &json!({})).unwrap_or_else(|e| panic!("{e}"));
        let ping = &doc["paths"]["/api/ping"]["get"];
        assert_eq!(ping["operationId"], "op GET /api/ping");
        for status in ["200", "502", "503", "504"] {
            assert!(ping["responses"].get(status).is_some(), "{status} missing: {ping}");
        }
        assert!(ping["responses"].get("413").is_none(), "no body, no 413");
        let schemas = &doc["components"]["schemas"];
        assert!(schemas.get("Thing").is_some() && schemas.get("Part").is_some(), "used schemas copied");
        assert!(schemas.get("Unused").is_none());

        let missing = upstream(&USER_ROUTES[1..]);
        let err = document(GatewayRole::User, &missing, &json!({})).err().unwrap_or_default();
        assert!(err.contains("GET /api/ping"), "{err}");
    }

    #[test]
    fn the_control_document_takes_the_orchestrators_operations() {
        let routes: Vec<&str> = ORCHESTRATOR_ROUTES.iter().chain(CONSOLE_ROUTES).copied().collect();
        let orchestrator = upstream(&routes);
        let doc = document(GatewayRole::Control, &json!({}), &orchestrator).unwrap_or_else(|e| panic!("{e}"));
        let list = &doc["paths"]["/api/scenarios"]["get"];
        assert_eq!(list["operationId"], "op GET /api/scenarios");
        assert!(list["responses"].get("403").is_some(), "the CSRF refusal is the gateway's own");
        assert!(doc["paths"]["/api/services/{service}/config"]["patch"].is_object());
    }

    #[test]
    fn control_document_has_the_console_and_metrics_routes() {
        let doc = openapi(GatewayRole::Control);
        for route in CONSOLE_ROUTES {
            let (_, path) = routes::split_route(route).unwrap_or_else(|| panic!("{route}"));
            assert!(doc.paths.paths.contains_key(path), "{route} missing");
        }
        assert!(doc.paths.paths.contains_key("/api/services/{service}/metrics"));
    }

    #[test]
    fn observability_document_has_metrics_route() {
        let doc = openapi(GatewayRole::Observability);
        assert!(doc.paths.paths.contains_key("/api/services/{service}/metrics"));
    }
}
