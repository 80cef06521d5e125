//! Talking to the stack's services: their `/config` (as the instructor `orchestrator`, with a
//! token minted with the stack's private key) and the runner's `/slis`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use scenario::sli::SliSnapshot;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::{JwtSigner, Role};

/// Subject of the orchestrator's own token: changes made under it are the scenario's.
pub const SUBJECT: &str = "orchestrator";

/// The runner's service name.
pub const RUNNER: &str = "runner";

/// The runner's default SLI window, seconds: what a run at `time_scale` 1 is judged on.
pub const SLI_WINDOW_SECS: f64 = 10.0;
/// The shortest SLI window a compressed run is judged on: fewer journeys make noisy ratios.
pub const MIN_SLI_WINDOW_SECS: f64 = 3.0;

/// The SLI window of a run at `time_scale`: compressed with the run's other durations, so a
/// repair shows up in the SLIs as soon (relative to the success window) as it would at full
/// scale, but never under [`MIN_SLI_WINDOW_SECS`].
pub fn sli_window_secs(time_scale: f64) -> u32 {
    // Bounded to 3..=10 above, so the cast cannot truncate.
    (SLI_WINDOW_SECS * time_scale).round().clamp(MIN_SLI_WINDOW_SECS, SLI_WINDOW_SECS) as u32
}

/// Config history entries read per poll; more changes than this between two ticks are rare
/// (a tick is a second) and the older ones are then missed from the timeline.
const HISTORY_PAGE: usize = 100;

/// One accepted change as a service's `GET /config/history` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: Role,
    #[serde(default)]
    pub action: crate::model::ChangeAction,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub through: Option<String>,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// A failed call, naming the service and what went wrong (status and the service's message).
#[derive(Debug, thiserror::Error)]
#[error("{service}: {message}")]
pub struct ServiceError {
    pub service: String,
    pub message: String,
}

/// Where the services are and how to call them.
#[derive(Clone)]
pub struct Services {
    http: reqwest::Client,
    /// Mints the orchestrator's own instructor tokens for the services' `/config`.
    keys: Arc<JwtSigner>,
    targets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("targets", &self.targets).finish_non_exhaustive()
    }
}

impl Services {
    pub fn new(targets: BTreeMap<String, String>, keys: Arc<JwtSigner>, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).no_proxy().build()?;
        let targets = targets.into_iter().map(|(name, url)| (name, url.trim_end_matches('/').to_owned())).collect();
        Ok(Self { http, keys, targets })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(String::as_str)
    }

    pub fn knows(&self, service: &str) -> bool {
        self.targets.contains_key(service)
    }

    /// Services whose config changes belong on a run's timeline and are reset for a run:
    /// all of them, the runner included (its load is part of the incident, so a change to it
    /// is on the record like any other).
    pub fn observed(&self) -> impl Iterator<Item = &str> {
        self.names()
    }

    /// The runner's current `/config` values.
    pub async fn runner_config(&self) -> Result<Value, ServiceError> {
        self.config_values(RUNNER).await
    }

    fn url(&self, service: &str, path: &str) -> Result<String, ServiceError> {
        self.targets
            .get(service)
            .map(|base| format!("{base}{path}"))
            .ok_or_else(|| ServiceError { service: service.to_owned(), message: "unknown service".to_owned() })
    }

    fn token(&self, service: &str) -> Result<String, ServiceError> {
        self.keys
            .mint(SUBJECT, Role::Instructor, Duration::from_secs(300))
            .map_err(|e| ServiceError { service: service.to_owned(), message: e.to_string() })
    }

    async fn send(&self, service: &str, req: reqwest::RequestBuilder) -> Result<Value, ServiceError> {
        let fail = |message: String| ServiceError { service: service.to_owned(), message };
        // Names the orchestrator as the client in the services' change history.
        let req = req.header("x-observastack-client", "orchestrator");
        let resp = req.send().await.map_err(|e| fail(format!("unreachable: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"].as_str().map_or_else(|| body.to_string(), str::to_owned);
            Err(fail(format!("{status}: {message}")))
        }
    }

    /// `PATCH {service}/config` as the instructor.
    pub async fn patch_config(&self, service: &str, patch: &Value) -> Result<Value, ServiceError> {
        let req = self.http.patch(self.url(service, "/config")?).bearer_auth(self.token(service)?).json(patch);
        self.send(service, req).await
    }

    /// `DELETE {service}/config`: every field back to its default.
    pub async fn reset_config(&self, service: &str) -> Result<Value, ServiceError> {
        let req = self.http.delete(self.url(service, "/config")?).bearer_auth(self.token(service)?);
        self.send(service, req).await
    }

    /// The current values of `{service}/config`.
    pub async fn config_values(&self, service: &str) -> Result<Value, ServiceError> {
        let req = self.http.get(self.url(service, "/config")?).bearer_auth(self.token(service)?);
        let mut view = self.send(service, req).await?;
        Ok(view.get_mut("values").map(Value::take).unwrap_or(Value::Null))
    }

    /// Recent `/config` changes of `service`, oldest first.
    pub async fn history(&self, service: &str) -> Result<Vec<HistoryEntry>, ServiceError> {
        let req = self
            .http
            .get(self.url(service, &format!("/config/history?limit={HISTORY_PAGE}"))?)
            .bearer_auth(self.token(service)?);
        let body = self.send(service, req).await?;
        let mut entries: Vec<HistoryEntry> = serde_json::from_value(body)
            .map_err(|e| ServiceError { service: service.to_owned(), message: format!("unreadable history: {e}") })?;
        entries.sort_by_key(|e| e.revision);
        Ok(entries)
    }

    /// The runner's SLIs over the trailing `window_secs`.
    pub async fn slis(&self, window_secs: u32) -> Result<SliSnapshot, ServiceError> {
        let req = self.http.get(self.url(RUNNER, &format!("/slis?window_secs={window_secs}"))?);
        let body = self.send(RUNNER, req).await?;
        serde_json::from_value(body)
            .map_err(|e| ServiceError { service: RUNNER.to_owned(), message: format!("unreadable SLIs: {e}") })
    }

    /// Starts the runner's load with `load` (a `scenario::load::LoadSpec`).
    pub async fn start_load(&self, load: &Value) -> Result<(), ServiceError> {
        self.patch_config(RUNNER, &json!({ "enabled": true, "load": load })).await.map(drop)
    }

    pub async fn stop_load(&self) -> Result<(), ServiceError> {
        self.patch_config(RUNNER, &json!({ "enabled": false })).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sli_window_shrinks_with_the_time_scale_down_to_a_floor() {
        assert_eq!(sli_window_secs(1.0), 10);
        assert_eq!(sli_window_secs(0.5), 5);
        assert_eq!(sli_window_secs(0.1), 3);
        assert_eq!(sli_window_secs(0.01), 3);
    }
}
