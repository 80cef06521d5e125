//! `observastack config get|set`: a service's runtime config through the control gateway,
//! authenticated with a token minted with the stack's private key.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value};
use service_kit::Role;

use crate::{state, ui};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Control gateway base URL.
    #[arg(long, env = "OBSERVASTACK_CONTROL_URL", default_value = "http://127.0.0.1:8081")]
    pub control_url: String,
    /// Role of the minted token: `learner` or `instructor`.
    #[arg(long, default_value = "learner")]
    pub role: Role,
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Print the current values of SERVICE (e.g. `shop`, `gateway-user`).
    Get { service: String },
    /// Change fields: `observastack config set shop db.pool_size=20 release.version=2.4.0`.
    Set {
        service: String,
        /// `dotted.field=value`; the value is parsed as JSON when it can be, else taken as text.
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Print the change history of SERVICE.
    History { service: String },
}

/// Turns `a.b=1 c=x` into the merge patch `{"a":{"b":1},"c":"x"}`.
pub fn assignments_to_patch(assignments: &[String]) -> anyhow::Result<Value> {
    let mut root = Map::new();
    for assignment in assignments {
        let (path, raw) = assignment
            .split_once('=')
            .with_context(|| format!("`{assignment}` is not `field=value` (e.g. db.pool_size=20)"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let mut node = &mut root;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                anyhow::bail!("`{path}` has an empty segment");
            }
            if i + 1 == parts.len() {
                node.insert((*part).to_owned(), value.clone());
            } else {
                let entry = node.entry((*part).to_owned()).or_insert_with(|| Value::Object(Map::new()));
                node =
                    entry.as_object_mut().with_context(|| format!("`{part}` is set both as a value and an object"))?;
            }
        }
    }
    Ok(Value::Object(root))
}

/// The request for `action`, named as the CLI's in the services' change history.
fn config_request(
    http: &reqwest::Client,
    base: &str,
    action: &ConfigAction,
    token: &str,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let request = match action {
        ConfigAction::Get { service } => http.get(format!("{base}/api/services/{service}/config")),
        ConfigAction::History { service } => http.get(format!("{base}/api/services/{service}/config/history")),
        ConfigAction::Set { service, assignments } => {
            http.patch(format!("{base}/api/services/{service}/config")).json(&assignments_to_patch(assignments)?)
        }
    };
    Ok(request.bearer_auth(token).header(service_kit::config::CLIENT_HEADER, CLIENT))
}

/// `client` of the changes this command makes (see `service_kit::config::ChangeOrigin`).
pub const CLIENT: &str = "cli";

pub async fn run(state_dir: &Path, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let keys = state::load_keys(state_dir)?;
    let token = keys.mint("cli", args.role, Duration::from_secs(300))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let base = args.control_url.trim_end_matches('/');
    let resp = config_request(&http, base, &args.action, &token)?
        .send()
        .await
        .with_context(|| format!("cannot reach the control gateway at {base} (is the stack up?)"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    ui::stdout_line(&serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        ui::error(&format!("the service answered {status}"));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assignments_build_a_nested_merge_patch() {
        let patch =
            assignments_to_patch(&["db.pool_size=20".into(), "release.version=2.4.0".into(), "db.x=true".into()])
                .expect("valid assignments");
        assert_eq!(patch, json!({"db": {"pool_size": 20, "x": true}, "release": {"version": "2.4.0"}}));
    }

    #[test]
    fn every_config_request_names_the_cli_as_its_client() {
        let http = reqwest::Client::new();
        let actions = [
            ConfigAction::Get { service: "shop".into() },
            ConfigAction::History { service: "shop".into() },
            ConfigAction::Set { service: "shop".into(), assignments: vec!["db.pool_size=20".into()] },
        ];
        for action in &actions {
            let request = config_request(&http, "http://127.0.0.1:8081", action, "t0ken")
                .and_then(|r| Ok(r.build()?))
                .unwrap_or_else(|e| panic!("{action:?}: {e}"));
            assert_eq!(request.headers().get("x-observastack-client").map(|v| v.as_bytes()), Some(&b"cli"[..]));
            assert!(request.headers().contains_key("authorization"), "{action:?}");
        }
    }

    #[test]
    fn malformed_assignments_are_refused() {
        assert!(assignments_to_patch(&["db.pool_size".into()]).is_err());
        assert!(assignments_to_patch(&["a=1".into(), "a.b=2".into()]).is_err());
        assert!(assignments_to_patch(&["a..b=1".into()]).is_err());
    }
}
