//! Start-up shared by every service binary, in the order each `main` needs it: the stack's keys
//! from the environment (so a missing key fails before anything else starts), telemetry, then
//! following the supervisor. Also the defaults more than one service states.

use crate::auth::{self, ENV_JWT_PRIVATE_KEY, ENV_JWT_PUBLIC_KEYS};
use crate::telemetry::{self, TelemetryGuard};
use crate::{JwtKeys, JwtSigner};

/// The stack's PostgreSQL database (the shop's tables and the orchestrator's schema), as a
/// native run reaches it.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/observastack";

/// What a service's `main` keeps from start-up.
#[derive(Debug)]
pub struct Started {
    /// The stack's public keys, never empty.
    pub jwt_keys: JwtKeys,
    /// Flushes spans and log records when dropped: hold it until `main` returns.
    pub telemetry: TelemetryGuard,
}

/// Loads the public keys named by [`ENV_JWT_PUBLIC_KEYS`], starts telemetry for `service`
/// (spans and logs to `otlp_endpoint` if given, filtered by `log`) and follows the supervisor.
pub fn start(service: &str, otlp_endpoint: Option<&str>, log: &str) -> anyhow::Result<Started> {
    let jwt_keys = public_keys()?;
    finish(service, otlp_endpoint, log, jwt_keys)
}

/// [`start`] for the service that mints tokens: also loads the private key named by
/// [`ENV_JWT_PRIVATE_KEY`], before telemetry starts.
pub fn start_signing(service: &str, otlp_endpoint: Option<&str>, log: &str) -> anyhow::Result<(Started, JwtSigner)> {
    let jwt_keys = public_keys()?;
    let signer = auth::signer_from_env(env(ENV_JWT_PRIVATE_KEY).as_deref())?;
    Ok((finish(service, otlp_endpoint, log, jwt_keys)?, signer))
}

fn public_keys() -> anyhow::Result<JwtKeys> {
    auth::public_keys_from_env(env(ENV_JWT_PUBLIC_KEYS).as_deref())
}

fn finish(service: &str, otlp_endpoint: Option<&str>, log: &str, jwt_keys: JwtKeys) -> anyhow::Result<Started> {
    let telemetry = telemetry::init(service, otlp_endpoint, log)?;
    crate::server::follow_supervisor()?;
    Ok(Started { jwt_keys, telemetry })
}

/// The keys are read here and nowhere below `main`; [`auth::public_keys_from_env`] and
/// [`auth::signer_from_env`] take the value, so tests pass one instead.
fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_public_keys_nothing_starts_and_the_error_names_the_env_key() {
        if env(ENV_JWT_PUBLIC_KEYS).is_some() {
            return; // the test process was given keys; the refusal cannot be observed here
        }
        let err = start("startup-test", None, "off").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(ENV_JWT_PUBLIC_KEYS), "{err}");
        let err = start_signing("startup-test", None, "off").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(ENV_JWT_PUBLIC_KEYS), "the public keys come first: {err}");
    }
}
