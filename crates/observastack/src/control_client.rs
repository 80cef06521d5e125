//! The CLI's client of the control gateway: tokens minted with the stack's private key, calls
//! to the orchestrator's API, and refusals as the API gave them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use service_kit::{JwtSigner, Role};

use crate::{state, ui};

/// Where the control gateway is and who the CLI is to it; shared by every remote subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Control gateway base URL.
    #[arg(long, env = "OBSERVASTACK_CONTROL_URL", default_value = "http://127.0.0.1:8081")]
    pub control_url: String,
    /// Role of the minted token: `learner` or `instructor` (sees faults, hints and solutions).
    #[arg(long, default_value = "learner")]
    pub role: Role,
}

/// Subject of the tokens the CLI mints; runs and config history name it.
const SUBJECT: &str = "cli";
/// Lifetime of a minted token: one command, or one WebSocket handshake.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A client of the control gateway's scenario routes.
pub struct Control {
    http: reqwest::Client,
    base: String,
    keys: JwtSigner,
    role: Role,
    key_path: PathBuf,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("base", &self.base).field("role", &self.role).finish_non_exhaustive()
    }
}

/// A refusal from the API: `{"error": {"code", "message", "details": [{field, rule, message}]}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Vec<Detail>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub field: String,
    pub rule: String,
    pub message: String,
}

impl Refusal {
    pub fn from_body(status: StatusCode, body: &Value) -> Self {
        let error = &body["error"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let details = error["details"]
            .as_array()
            .map(|details| {
                details
                    .iter()
                    .map(|d| Detail { field: text(&d["field"]), rule: text(&d["rule"]), message: text(&d["message"]) })
                    .collect()
            })
            .unwrap_or_default();
        let message = match error["message"].as_str() {
            Some(message) => message.to_owned(),
            None => match body.as_str() {
                Some(raw) if !raw.trim().is_empty() => raw.trim().to_owned(),
                _ => status.canonical_reason().unwrap_or("refused").to_owned(),
            },
        };
        Self { status, code: text(&error["code"]), message, details }
    }

    /// `error: <message> (<status> <code>)`, then one line per field: `  field: why (rule: r)`.
    pub fn lines(&self) -> Vec<String> {
        let code = if self.code.is_empty() { String::new() } else { format!(" {}", self.code) };
        let headline = if self.details.is_empty() { self.message.as_str() } else { "the request was refused" };
        let mut lines = vec![format!("{headline} ({}{code})", self.status.as_u16())];
        for d in &self.details {
            lines.push(format!("  {}: {} (rule: {})", d.field, d.message, d.rule));
        }
        lines
    }
}

impl Control {
    pub fn new(state_dir: &Path, args: &ControlArgs) -> anyhow::Result<Self> {
        let keys = state::load_keys(state_dir)?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self {
            http,
            base: args.control_url.trim_end_matches('/').to_owned(),
            keys,
            role: args.role,
            key_path: state::private_key_path(state_dir),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A fresh token of the chosen role.
    pub fn token(&self) -> anyhow::Result<String> {
        Ok(self.keys.mint(SUBJECT, self.role, TOKEN_LIFETIME)?)
    }

    /// Prints a refusal; a 401 also says which key signed the token.
    pub fn report(&self, refusal: &Refusal) {
        let mut lines = refusal.lines().into_iter();
        if let Some(first) = lines.next() {
            ui::error(&first);
        }
        for line in lines {
            ui::progress(line.trim_start());
        }
        if refusal.status == StatusCode::UNAUTHORIZED {
            ui::progress(&format!(
                "the token was signed with {} (kid {}); is that the running stack's state dir (--state-dir)?",
                self.key_path.display(),
                self.keys.kid()
            ));
        }
    }

    /// Calls `path`: `Ok(Ok(body))` on 2xx, `Ok(Err(refusal))` on an API error, `Err` when the
    /// gateway cannot be reached at all.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Result<Value, Refusal>> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token()?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control gateway at {} (is the stack up?)", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(if status.is_success() { Ok(body) } else { Err(Refusal::from_body(status, &body)) })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Result<Value, Refusal>> {
        self.call(Method::GET, path, None).await
    }

    /// Like [`Control::call`], but a refusal is printed and becomes exit code 1.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Result<Value, ExitCode>> {
        Ok(self.call(method, path, body).await?.map_err(|refusal| {
            self.report(&refusal);
            ExitCode::FAILURE
        }))
    }
}
