//! Runtime configuration of a gateway (`/config` on the admin listener): the upstream pool
//! knobs learners repair and the per-route faults the orchestrator injects.
//!
//! The type is generic over a role marker so that `check()` can reject fault keys naming routes
//! the role does not serve, and so that the control role can keep every field to the
//! instructor; the wire shape and the schema are the same for every role.
//!
//! The route lists of the three roles live here too: they key the faults, and the gateway routes
//! and documents them.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::faults::{HasRouteFaults, RouteFaults, check_route_keys};
use service_kit::{FieldError, RuntimeConfig};

/// The shop's business routes, the only ones the user gateway forwards (`"<METHOD> <template>"`):
/// the shop's own list, so the two cannot drift apart.
pub const USER_ROUTES: &[&str] = crate::shop::ROUTES;

/// Token-guarded routes of the control gateway (besides `/healthz`).
pub const CONTROL_ROUTES: &[&str] = &[
    "GET /api/services",
    "GET /api/services/{service}/config",
    "GET /api/services/{service}/metrics",
    "PATCH /api/services/{service}/config",
    "PUT /api/services/{service}/config",
    "DELETE /api/services/{service}/config",
    "GET /api/services/{service}/config/{*rest}",
    // Forwarded to the orchestrator (`ORCHESTRATOR_ROUTES`): keep these last.
    "GET /api/scenarios",
    "GET /api/scenarios/{id}",
    "GET /api/runs",
    "POST /api/runs",
    "GET /api/runs/current",
    "POST /api/runs/current/stop",
    "POST /api/runs/current/give-up",
    "GET /api/runs/{id}",
    "POST /api/reset",
    "GET /api/ws",
];

/// The console's pages on the control gateway, forwarded to the orchestrator without a token
/// (the gateway's `control::is_console_path`). For the OpenAPI document only: the router matches
/// `/console/{*rest}`, and route faults do not apply to these pages.
pub const CONSOLE_ROUTES: &[&str] = &[
    "GET /",
    "GET /console",
    "GET /console/",
    "GET /console/login",
    "GET /console/settings.json",
    "POST /console/logout",
    "GET /console/{path}",
];

/// The control routes forwarded unchanged to the service named `orchestrator`; `GET /api/ws`
/// is a WebSocket tunnel.
pub const ORCHESTRATOR_ROUTES: &[&str] = CONTROL_ROUTES.split_at(CONTROL_ROUTES.len() - 10).1;

/// Read-only routes of the observability gateway (besides `/healthz`).
pub const OBSERVABILITY_ROUTES: &[&str] = &["GET /api/services", "GET /api/services/{service}/metrics"];

/// A gateway role at the type level: names the routes fault keys may refer to and the fields
/// only the instructor may change.
pub trait RoleRoutes:
    std::fmt::Debug + Clone + Default + PartialEq + Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static
{
    /// `"<METHOD> <route template>"` of every public route of the role.
    const ROUTES: &'static [&'static str];
    /// [`RuntimeConfig::instructor_only`] of the role's config: the faults by default.
    const INSTRUCTOR_ONLY: &'static [&'static str] = &["faults"];
    /// [`RuntimeConfig::instructor_only_reason`] of the role's config.
    const INSTRUCTOR_ONLY_REASON: &'static str = service_kit::config::FAULTS_REASON;
}

/// Why a learner may not change the control gateway (quoted in the 403).
pub const CONTROL_INSTRUCTOR_ONLY_REASON: &str =
    "the control gateway carries the control path itself: a learner change could cut the learner off from it";

/// Marker for the user role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct User;
/// Marker for the control role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Control;
/// Marker for the observability role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Observability;

impl RoleRoutes for User {
    const ROUTES: &'static [&'static str] = USER_ROUTES;
}
impl RoleRoutes for Control {
    const ROUTES: &'static [&'static str] = CONTROL_ROUTES;
    // Every field: `upstream.timeout_ms=1` would time out every control request, the one that
    // would undo it included.
    const INSTRUCTOR_ONLY: &'static [&'static str] = &["upstream", "faults"];
    const INSTRUCTOR_ONLY_REASON: &'static str = CONTROL_INSTRUCTOR_ONLY_REASON;
}
impl RoleRoutes for Observability {
    const ROUTES: &'static [&'static str] = OBSERVABILITY_ROUTES;
}

/// Runtime configuration of one gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default, bound = "")]
#[schemars(rename = "GatewayConfig", bound = "")]
pub struct GatewayConfig<R: RoleRoutes = User> {
    /// How the gateway talks to its upstreams.
    pub upstream: UpstreamConfig,
    /// Injected per-route faults, keyed by `"<METHOD> <route>"` or `"*"` (instructor only).
    pub faults: RouteFaults,
    #[serde(skip)]
    #[schemars(skip)]
    role: PhantomData<R>,
}

/// The upstream connection pool: the knob of the "gateway connection pool lowered" scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Most upstream requests in flight at once, across all worker threads. A request holds
    /// its slot until the upstream's response body has been sent on. Resized live: shrinking
    /// never interrupts requests already holding a slot.
    #[schemars(range(min = 1, max = 4096))]
    pub pool_size: u32,
    /// Total budget of one request in milliseconds: waiting for a pool slot and then for the
    /// upstream's response head. Past it while waiting: 503 with `Retry-After`; past it while
    /// the upstream works: 504.
    #[schemars(range(min = 1, max = 120000))]
    pub timeout_ms: u64,
    /// Most requests allowed to queue for a pool slot; one more is refused with 503 at once,
    /// so a saturated pool never grows an unbounded queue. 0 disables queueing.
    #[schemars(range(min = 0, max = 100000))]
    pub max_waiting: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self { pool_size: 256, timeout_ms: 10_000, max_waiting: 10_000 }
    }
}

impl<R: RoleRoutes> GatewayConfig<R> {
    pub fn new(upstream: UpstreamConfig, faults: RouteFaults) -> Self {
        Self { upstream, faults, role: PhantomData }
    }
}

impl<R: RoleRoutes> RuntimeConfig for GatewayConfig<R> {
    fn instructor_only() -> &'static [&'static str] {
        R::INSTRUCTOR_ONLY
    }

    fn instructor_only_reason() -> &'static str {
        R::INSTRUCTOR_ONLY_REASON
    }

    fn check(&self) -> Vec<FieldError> {
        check_route_keys(&self.faults, R::ROUTES)
    }
}

impl<R: RoleRoutes> HasRouteFaults for GatewayConfig<R> {
    fn route_faults(&self) -> &RouteFaults {
        &self.faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_their_ranges() {
        let config = GatewayConfig::<User>::default();
        assert_eq!(config.upstream, UpstreamConfig { pool_size: 256, timeout_ms: 10_000, max_waiting: 10_000 });
        assert!(config.check().is_empty());
    }

    #[test]
    fn fault_keys_must_name_a_route_of_the_role() {
        let mut faults = RouteFaults::new();
        faults.insert("POST /api/checkout".to_owned(), service_kit::faults::RouteFault::default());
        let user = GatewayConfig::<User>::new(UpstreamConfig::default(), faults.clone());
        assert!(user.check().is_empty());
        let control = GatewayConfig::<Control>::new(UpstreamConfig::default(), faults);
        assert_eq!(control.check().len(), 1);
    }

    #[test]
    fn every_field_of_the_control_gateway_is_instructor_only_and_only_faults_elsewhere() {
        // A field added later must not become a learner knob of the control path by omission.
        let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig<Control>)).unwrap_or_default();
        let mut fields: Vec<&str> =
            schema["properties"].as_object().map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        fields.sort_unstable();
        let mut locked = GatewayConfig::<Control>::instructor_only().to_vec();
        locked.sort_unstable();
        assert!(!fields.is_empty());
        assert_eq!(fields, locked);
        assert_eq!(GatewayConfig::<User>::instructor_only(), ["faults"]);
        assert_eq!(GatewayConfig::<Observability>::instructor_only(), ["faults"]);
    }

    #[test]
    fn schema_has_ranges_and_no_role_marker() {
        let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig<Control>)).unwrap_or_default();
        let text = schema.to_string();
        assert!(text.contains("\"maximum\":4096"), "{text}");
        assert!(!text.contains("role"), "{text}");
        assert_eq!(schema["title"], "GatewayConfig");
    }
}
