//! OpenAPI documents of the public listener of each role. The user role's routes are the
//! shop's, passed through unchanged, so they are listed from [`USER_ROUTES`] rather than
//! described twice.

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
    paths(routes::healthz, control::list_services, control::service_config, control::service_config_sub, control::service_metrics),
    components(schemas(
        routes::Health,
        routes::ServiceList,
        routes::ServiceLink,
        service_kit::error::ErrorBody,
        service_kit::error::ErrorDetail,
        service_kit::FieldError,
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

/// Routes the gateway forwards without interpreting them, described by reference to `upstream`.
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
