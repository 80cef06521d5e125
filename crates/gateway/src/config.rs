//! Runtime configuration of a gateway (`/config` on the admin listener): the upstream pool
//! knobs learners repair and the per-route faults the orchestrator injects.
//!
//! The type is generic over a role marker only so that `check()` can reject fault keys naming
//! routes the role does not serve; the wire shape and the schema are the same for every role.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::faults::{HasRouteFaults, RouteFaults, check_route_keys};
use service_kit::{FieldError, RuntimeConfig};

use crate::routes::{CONTROL_ROUTES, OBSERVABILITY_ROUTES, USER_ROUTES};

/// A gateway role at the type level: names the routes fault keys may refer to.
pub trait RoleRoutes:
    std::fmt::Debug + Clone + Default + PartialEq + Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static
{
    /// `"<METHOD> <route template>"` of every public route of the role.
    const ROUTES: &'static [&'static str];
}

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
    fn schema_has_ranges_and_no_role_marker() {
        let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig<Control>)).unwrap_or_default();
        let text = schema.to_string();
        assert!(text.contains("\"maximum\":4096"), "{text}");
        assert!(!text.contains("role"), "{text}");
        assert_eq!(schema["title"], "GatewayConfig");
    }
}
