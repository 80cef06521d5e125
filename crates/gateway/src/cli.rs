//! Command line of the gateway binary. Parsing stays here, out of `main.rs`, so it is tested
//! without a process; the public keys come from `service_kit::startup` and are passed in.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use clap::Parser;
use service_kit::JwtKeys;

use crate::settings::{DEFAULT_SHOP_URL, GatewayRole, ServiceTarget, Settings, UpstreamUrl, default_threads};

/// Env key of the OTLP/HTTP endpoint (OpenTelemetry's standard name).
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Env key of the log filter.
pub const ENV_LOG: &str = "RUST_LOG";

/// ObservaStack edge proxy: the user, control or observability gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    /// Which gateway to be.
    #[arg(long, value_enum)]
    pub role: GatewayRole,
    /// Public listener [default: 127.0.0.1:8080 user, :8081 control, :8082 observability].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Internal listener for /healthz, /readyz, /metrics and /config
    /// [default: 127.0.0.1:8111 user, :8112 control, :8113 observability].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// The shop, where the user gateway sends business routes.
    #[arg(long, value_name = "URL", default_value = DEFAULT_SHOP_URL)]
    pub shop_url: UpstreamUrl,
    /// A service whose /config (control) or /metrics (observability) this gateway fronts.
    #[arg(long = "service", value_name = "NAME=URL")]
    pub services: Vec<ServiceTarget>,
    /// Worker threads, each with its own listener and upstream connections [default: CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// OTLP/HTTP endpoint for traces; none means no export.
    #[arg(long, env = ENV_OTLP_ENDPOINT, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Milliseconds a client has to send a complete request head before it is disconnected
    /// (slow-loris guard) [default: 30000].
    #[arg(long, env = service_kit::server::ENV_HEADER_READ_TIMEOUT_MS, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub header_read_timeout_ms: Option<u64>,
    /// Log filter, e.g. `info` or `info,gateway=debug`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,
}

impl Cli {
    /// Settings for this command line, verifying tokens with `keys` (the stack's public keys).
    pub fn into_settings(self, keys: JwtKeys) -> anyhow::Result<Settings> {
        let threads = self.threads.unwrap_or_else(default_threads);
        anyhow::ensure!((1..=1024).contains(&threads), "--threads must be between 1 and 1024 (got {threads})");
        let mut seen = BTreeSet::new();
        for service in &self.services {
            anyhow::ensure!(seen.insert(service.name.as_str()), "--service {} is given twice", service.name);
        }
        let mut settings = Settings::new(self.role, keys);
        settings.listen = self.listen.unwrap_or(settings.listen);
        settings.admin_listen = self.admin_listen.unwrap_or(settings.admin_listen);
        settings.shop_url = self.shop_url;
        settings.services = self.services;
        settings.threads = threads;
        if let Some(ms) = self.header_read_timeout_ms {
            settings.header_read_timeout = std::time::Duration::from_millis(ms);
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_keys() -> JwtKeys {
        service_kit::JwtSigner::generate().map(|s| s.verifier()).unwrap_or_default()
    }

    fn parse(args: &[&str]) -> anyhow::Result<Cli> {
        Ok(Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied()))?)
    }

    #[test]
    fn role_decides_default_ports() -> anyhow::Result<()> {
        let settings = parse(&["--role", "control"])?.into_settings(public_keys())?;
        assert_eq!(settings.listen, "127.0.0.1:8081".parse()?);
        assert_eq!(settings.admin_listen, "127.0.0.1:8112".parse()?);
        assert_eq!(settings.shop_url.to_string(), "http://127.0.0.1:8101");
        Ok(())
    }

    #[test]
    fn the_header_read_timeout_defaults_to_30_s_and_takes_milliseconds() -> anyhow::Result<()> {
        let settings = parse(&["--role", "user"])?.into_settings(public_keys())?;
        assert_eq!(settings.header_read_timeout, std::time::Duration::from_secs(30));
        let settings = parse(&["--role", "user", "--header-read-timeout-ms", "1500"])?.into_settings(public_keys())?;
        assert_eq!(settings.header_read_timeout, std::time::Duration::from_millis(1500));
        assert!(parse(&["--role", "user", "--header-read-timeout-ms", "0"]).is_err());
        Ok(())
    }

    #[test]
    fn services_and_listeners_are_taken_from_flags() -> anyhow::Result<()> {
        let cli = parse(&[
            "--role",
            "observability",
            "--listen",
            "0.0.0.0:9000",
            "--admin-listen",
            "127.0.0.1:9001",
            "--service",
            "shop=http://127.0.0.1:8101",
            "--service",
            "gateway-user=http://127.0.0.1:8111",
            "--threads",
            "2",
        ])?;
        let settings = cli.into_settings(public_keys())?;
        assert_eq!(settings.listen, "0.0.0.0:9000".parse()?);
        assert_eq!(settings.services.len(), 2);
        assert_eq!(settings.threads, 2);
        Ok(())
    }

    #[test]
    fn unknown_role_and_bad_service_are_refused() {
        assert!(parse(&["--role", "admin"]).is_err());
        assert!(parse(&["--role", "control", "--service", "shop"]).is_err());
        assert!(parse(&["--role", "control", "--service", "shop=https://x:1"]).is_err());
    }

    #[test]
    fn duplicate_service_names_are_refused() -> anyhow::Result<()> {
        let cli = parse(&["--role", "control", "--service", "shop=http://a:1", "--service", "shop=http://b:2"])?;
        assert!(cli.into_settings(public_keys()).is_err());
        Ok(())
    }
}
