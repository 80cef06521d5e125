//! The shop's runtime configuration (`/config`): the operational knobs a learner turns and the
//! fault-only fields an instructor sets. Ranges live in the types and reach clients as JSON Schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use service_kit::faults::{HasRouteFaults, RouteFaults};
use service_kit::{FieldError, RuntimeConfig};

/// Every business route as `"<METHOD> <template>"`: the keys `faults` accepts, and the
/// templates the user gateway whitelists.
pub const ROUTES: &[&str] = &[
    "GET /api/ping",
    "GET /api/products",
    "GET /api/products/search",
    "GET /api/products/{id}",
    "POST /api/carts",
    "GET /api/carts/{cart_id}",
    "POST /api/carts/{cart_id}/items",
    "POST /api/checkout",
    "GET /api/orders/{id}",
];

/// Runtime configuration of the shop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// How prices are computed.
    pub pricing: PricingConfig,
    /// The bounded worker pool in front of the business routes.
    pub workers: WorkersConfig,
    /// The PostgreSQL connection pool.
    pub db: DbConfig,
    /// How product search queries the catalog.
    pub search: SearchConfig,
    /// Which release of the shop's code paths is live.
    pub release: ReleaseConfig,
    /// Injected per-route faults keyed by `"<METHOD> <route>"` or `"*"` (instructor only).
    pub faults: RouteFaults,
}

impl RuntimeConfig for ShopConfig {
    fn check(&self) -> Vec<FieldError> {
        service_kit::faults::check_route_keys(&self.faults, ROUTES)
    }
}

impl HasRouteFaults for ShopConfig {
    fn route_faults(&self) -> &RouteFaults {
        &self.faults
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// `efficient` looks price ranks up in tables built at start; `quadratic` rebuilds the
    /// category's rank table on every pricing call.
    pub algorithm: PricingAlgorithm,
}

// Variants carry plain comments, not doc comments: documented variants make the schema a
// `oneOf`, whose violations read worse than a plain `enum` ("not one of [..]").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PricingAlgorithm {
    // Precomputed sorted prices per category and a binary search: O(log n) per line.
    #[default]
    Efficient,
    // Rank table rebuilt per call with a sort inside a loop over the category: O(n² log n).
    Quadratic,
}

impl PricingAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Efficient => "efficient",
            Self::Quadratic => "quadratic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Business requests handled at the same time; the rest wait in the queue.
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrent: u32,
    /// Requests that may wait for a worker; beyond this they are refused with 503 at once.
    #[schemars(range(min = 0, max = 10000))]
    pub queue_limit: u32,
    /// Longest wait for a worker, in milliseconds, before the request is refused with 503.
    #[schemars(range(min = 1, max = 60000))]
    pub queue_timeout_ms: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self { max_concurrent: 64, queue_limit: 512, queue_timeout_ms: 2000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// Most PostgreSQL connections the shop holds open; a change builds a new pool.
    #[schemars(range(min = 1, max = 100))]
    pub pool_size: u32,
    /// Longest wait for a pooled connection, in milliseconds, before answering 503.
    #[schemars(range(min = 1, max = 60000))]
    pub acquire_timeout_ms: u32,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self { pool_size: 10, acquire_timeout_ms: 2000 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// `indexed` matches name prefixes through an index; `full_scan` matches words anywhere in
    /// name and description through a text-search vector computed per row, which no index serves.
    pub strategy: SearchStrategy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchStrategy {
    // Case-insensitive name prefix match on the `lower(name) text_pattern_ops` index.
    #[default]
    Indexed,
    // Full-text match over name and description, tokenised per row: a sequential scan.
    FullScan,
}

impl SearchStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Indexed => "indexed",
            Self::FullScan => "full_scan",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseConfig {
    /// The deployed release: `2.3.0` (previous stable), `2.4.0` (current stable) or `2.4.1`
    /// (hotfix). Rolling back is an operator action.
    pub version: ReleaseVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReleaseVersion {
    // The previous stable release.
    #[serde(rename = "2.3.0")]
    V2_3_0,
    // The current stable release.
    #[default]
    #[serde(rename = "2.4.0")]
    V2_4_0,
    // Hotfix whose checkout writes a column that was never migrated.
    #[serde(rename = "2.4.1")]
    V2_4_1,
}

impl ReleaseVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2_3_0 => "2.3.0",
            Self::V2_4_0 => "2.4.0",
            Self::V2_4_1 => "2.4.1",
        }
    }
}

impl std::fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serialize_to_the_documented_values() {
        let json = serde_json::to_value(ShopConfig::default()).unwrap();
        assert_eq!(json["pricing"]["algorithm"], "efficient");
        assert_eq!(json["workers"]["max_concurrent"], 64);
        assert_eq!(json["workers"]["queue_limit"], 512);
        assert_eq!(json["workers"]["queue_timeout_ms"], 2000);
        assert_eq!(json["db"]["pool_size"], 10);
        assert_eq!(json["db"]["acquire_timeout_ms"], 2000);
        assert_eq!(json["search"]["strategy"], "indexed");
        assert_eq!(json["release"]["version"], "2.4.0");
        assert_eq!(json["faults"], serde_json::json!({}));
    }

    #[test]
    fn schema_carries_ranges_and_enums() {
        let schema = serde_json::to_value(schemars::schema_for!(ShopConfig)).unwrap();
        let text = schema.to_string();
        assert!(text.contains("\"2.4.1\""), "{text}");
        assert!(text.contains("\"full_scan\""), "{text}");
        assert!(text.contains("\"maximum\":1024"), "{text}");
    }

    #[test]
    fn fault_keys_must_name_a_route() {
        let mut config = ShopConfig::default();
        config.faults.insert("GET /api/nope".into(), Default::default());
        let errors = config.check();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "faults.GET /api/nope");
    }
}
