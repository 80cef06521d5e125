//! What every ObservaStack service shares: typed runtime configuration behind `/config`,
//! the JWT guard, telemetry (JSON logs with trace ids, OTLP, Prometheus), route faults, a
//! binary's start-up (keys, telemetry, supervisor), redacted secrets and the server bootstrap
//! (health, readiness, graceful shutdown).

pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod facts;
pub mod faults;
pub mod metrics;
pub mod openapi;
pub mod secret;
pub mod server;
pub mod startup;
pub mod telemetry;

pub use auth::{Caller, JwtKeys, JwtSigner, Role};
pub use config::{ConfigStore, RuntimeConfig};
pub use error::{ApiError, FieldError};
pub use metrics::Metrics;
pub use secret::Secret;

/// Version baked into every binary; reported as `observastack_build_info{version}`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
