//! The services scenarios may patch, described from their real config types (defaults, JSON
//! Schema, instructor-only fields, their own checks), so a scenario's patches are validated
//! exactly as the services' `/config` would validate them: by lint, `verify` and the run engine.

use scenario::catalog::{CatalogError, Problem, ServiceCatalog, ServiceSpec};
use service_kit::RuntimeConfig;

use crate::gateway::{GatewayConfig, User};
use crate::shop::ShopConfig;

/// `shop` and `gateway` (the user gateway), by the names scenario files use.
pub fn service_catalog() -> anyhow::Result<ServiceCatalog> {
    Ok(ServiceCatalog::new().with(spec::<ShopConfig>("shop")?).with(spec::<GatewayConfig<User>>("gateway")?))
}

fn spec<T: RuntimeConfig>(name: &str) -> anyhow::Result<ServiceSpec> {
    let defaults = serde_json::to_value(T::default())?;
    let schema = serde_json::to_value(schemars::schema_for!(T))?;
    let spec = ServiceSpec::new(name, defaults, schema, T::instructor_only().iter().copied())
        .map_err(|CatalogError(e)| anyhow::anyhow!(e))?;
    Ok(spec.with_check(|config| match serde_json::from_value::<T>(config.clone()) {
        Ok(config) => config.check().into_iter().map(|e| Problem::new(e.field, e.rule, e.message)).collect(),
        // A whole document that does not parse: the field is the body's, as `PATCH /config` says.
        Err(err) => vec![Problem::new("(config)", "type", err.to_string())],
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_catalog_validates_with_the_services_real_rules() {
        let catalog = service_catalog().expect("the services' schemas compile");
        let shop = catalog.get("shop").expect("shop");
        assert!(shop.field_schema("release.version").is_some());
        assert!(shop.is_instructor_only("faults.*.latency_ms"));
        assert!(!shop.is_instructor_only("workers.max_concurrent"));
        let mut config = shop.defaults().clone();
        scenario::catalog::merge_patch(&mut config, &json!({"faults": {"GET /api/nope": {"latency_ms": 5}}}));
        let rules: Vec<_> = shop.validate(&config).into_iter().map(|p| p.rule).collect();
        assert_eq!(rules, ["known_route"]);
        let gateway = catalog.get("gateway").expect("gateway");
        let mut config = gateway.defaults().clone();
        scenario::catalog::merge_patch(&mut config, &json!({"upstream": {"pool_size": 0}}));
        let rules: Vec<_> = gateway.validate(&config).into_iter().map(|p| p.rule).collect();
        assert_eq!(rules, ["minimum"]);
    }
}
