//! Start-up settings of a gateway: which role it plays, where it listens and what it fronts.
//! Built by `main.rs` from flags and env, or directly by tests (port 0, one thread).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use service_kit::JwtKeys;

use crate::config::UpstreamConfig;

/// Which of the three gateways this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum GatewayRole {
    /// Business routes of the shop, for users and the scenario runner.
    User,
    /// Token-guarded operations: the services' `/config`, later the orchestrator and console.
    Control,
    /// Read-only views: the services' metrics, later dashboards.
    Observability,
}

impl GatewayRole {
    /// Service name used in metrics, logs and traces.
    pub fn service_name(self) -> &'static str {
        match self {
            Self::User => "gateway-user",
            Self::Control => "gateway-control",
            Self::Observability => "gateway-observability",
        }
    }

    /// Native default of the public listener (DESIGN §6).
    pub fn default_listen(self) -> SocketAddr {
        let port = match self {
            Self::User => 8080,
            Self::Control => 8081,
            Self::Observability => 8082,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Native default of the internal admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`).
    pub fn default_admin_listen(self) -> SocketAddr {
        let port = match self {
            Self::User => 8111,
            Self::Control => 8112,
            Self::Observability => 8113,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl fmt::Display for GatewayRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::Control => "control",
            Self::Observability => "observability",
        })
    }
}

/// Base URL of an upstream: `http://host:port` with an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash; empty for most upstreams.
    base_path: String,
}

impl UpstreamUrl {
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        let parts = uri.into_parts();
        let scheme = parts.scheme.ok_or_else(|| format!("`{s}` needs a scheme, e.g. http://127.0.0.1:8101"))?;
        // The upstream side of the gateway speaks plain HTTP/1.1 inside the stack's network.
        if scheme != Scheme::HTTP {
            return Err(format!("`{s}`: only http:// upstreams are supported"));
        }
        let authority = parts.authority.ok_or_else(|| format!("`{s}` needs a host"))?;
        let base_path = match parts.path_and_query {
            Some(pq) if pq.query().is_some() => return Err(format!("`{s}`: an upstream URL may not carry a query")),
            Some(pq) => pq.path().trim_end_matches('/').to_owned(),
            None => String::new(),
        };
        Ok(Self { scheme, authority, base_path })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// A service the control or observability gateway fronts: `NAME=URL` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    pub name: String,
    pub url: UpstreamUrl,
}

impl FromStr for ServiceTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, url) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=URL"))?;
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!("`{name}`: a service name uses lowercase letters, digits, `-` and `_`"));
        }
        Ok(Self { name: name.to_owned(), url: url.parse()? })
    }
}

/// Everything a gateway needs to start. Every field is public so tests can build one directly.
#[derive(Clone)]
pub struct Settings {
    pub role: GatewayRole,
    /// Public listener; port 0 picks a free port (see [`crate::Gateway::public_addr`]).
    pub listen: SocketAddr,
    /// Internal listener for health, readiness, metrics and `/config`.
    pub admin_listen: SocketAddr,
    /// Where the user role sends business routes; also its readiness dependency.
    pub shop_url: UpstreamUrl,
    /// Services whose `/config` (control) or `/metrics` (observability) the gateway fronts.
    pub services: Vec<ServiceTarget>,
    /// Worker threads, each with its own runtime, listener (SO_REUSEPORT) and upstream client.
    pub threads: usize,
    /// The stack's public keys: verify tokens on the control path and on `/config`. The
    /// gateway never holds the private key.
    pub jwt_keys: JwtKeys,
    /// How long in-flight requests may finish after shutdown was asked for.
    pub drain: Duration,
    /// Largest request body the public listener forwards; more is answered with 413.
    pub body_limit: usize,
    /// Upstream pool settings in force at start (revision 1 of `/config`).
    pub upstream: UpstreamConfig,
    /// A client that sends no complete request head within this is disconnected (slow-loris
    /// guard), on the public and the admin listener.
    pub header_read_timeout: Duration,
}

/// Request bodies the gateway forwards: generous for a shop API, small enough to bound memory.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Default `--shop-url` (DESIGN §6).
pub const DEFAULT_SHOP_URL: &str = "http://127.0.0.1:8101";

impl Settings {
    /// Native defaults for `role`: DESIGN §6 ports, the local shop, one thread per CPU.
    pub fn new(role: GatewayRole, jwt_keys: JwtKeys) -> Self {
        Self {
            role,
            listen: role.default_listen(),
            admin_listen: role.default_admin_listen(),
            shop_url: DEFAULT_SHOP_URL.parse().expect("DEFAULT_SHOP_URL is an upstream URL"),
            services: Vec::new(),
            threads: default_threads(),
            jwt_keys,
            drain: service_kit::server::DEFAULT_DRAIN,
            body_limit: DEFAULT_BODY_LIMIT,
            upstream: UpstreamConfig::default(),
            header_read_timeout: service_kit::server::DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("role", &self.role)
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("shop_url", &self.shop_url.to_string())
            .field("services", &self.services.iter().map(|s| format!("{}={}", s.name, s.url)).collect::<Vec<_>>())
            .field("threads", &self.threads)
            .field("jwt_keys", &self.jwt_keys)
            .field("drain", &self.drain)
            .field("body_limit", &self.body_limit)
            .field("upstream", &self.upstream)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish_non_exhaustive()
    }
}

/// One worker per CPU the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_keeps_scheme_authority_and_prefix() {
        let url: UpstreamUrl = "http://shop:8101/base/".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.authority().as_str(), "shop:8101");
        assert_eq!(url.base_path(), "/base");
        assert_eq!(url.to_string(), "http://shop:8101/base");
    }

    #[test]
    fn upstream_url_refuses_https_and_missing_host() {
        assert!("https://shop:8101".parse::<UpstreamUrl>().is_err());
        assert!("/just/a/path".parse::<UpstreamUrl>().is_err());
    }

    #[test]
    fn service_target_parses_name_equals_url() {
        let target: ServiceTarget = "gateway-user=http://127.0.0.1:8111".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.name, "gateway-user");
        assert_eq!(target.url.authority().as_str(), "127.0.0.1:8111");
        assert!("no-equals".parse::<ServiceTarget>().is_err());
        assert!("Bad Name=http://x:1".parse::<ServiceTarget>().is_err());
    }
}
