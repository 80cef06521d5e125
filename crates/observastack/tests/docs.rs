//! The documentation names every runtime knob the code has, so a new knob cannot ship
//! undocumented.

use std::path::Path;

use serde_json::Value;

fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                leaves(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn configuration_doc_names_every_knob_of_shop_and_gateway() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"))
        .expect("reading docs/configuration.md");
    let configs = [
        serde_json::to_value(shop::config::ShopConfig::default()).expect("shop config"),
        serde_json::to_value(gateway::GatewayConfig::<gateway::config::User>::default()).expect("gateway config"),
    ];
    let mut missing = Vec::new();
    for config in &configs {
        let mut paths = Vec::new();
        leaves("", config, &mut paths);
        missing.extend(paths.into_iter().filter(|p| !doc.contains(&format!("`{p}`"))));
    }
    assert!(missing.is_empty(), "docs/configuration.md does not document: {}", missing.join(", "));
}
