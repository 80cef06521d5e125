//! OpenAPI description of the routes every service shares (`/healthz`, `/readyz`,
//! `/metrics`, `/config*`). Each service merges it into its own document.
//!
//! The handlers are generic over the config type, which `#[utoipa::path]` cannot describe, so
//! the paths are declared on these documentation-only functions instead.

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
