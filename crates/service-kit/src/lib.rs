//! What every ObservaStack service shares: typed runtime configuration behind `/config`,
//! the JWT guard, telemetry (JSON logs with trace ids, OTLP, Prometheus), route faults and
//! the server bootstrap (health, readiness, graceful shutdown).

pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod facts;
pub mod faults;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod telemetry;

pub use auth::{Caller, JwtKeys, JwtSigner, Role};
pub use config::{ConfigStore, RuntimeConfig};
pub use error::{ApiError, FieldError};
pub use metrics::Metrics;

/// Version baked into every binary; reported as `observastack_build_info{version}`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
