//! ObservaStack edge proxy. One binary, three roles chosen at start: `user` forwards the
//! shop's business routes, `control` fronts the services' `/config` behind the stack's JWT,
//! `observability` offers read-only views. Every role also serves an internal admin listener
//! (`/healthz`, `/readyz`, `/metrics`, `/config`).
//!
//! Runtime model: one OS thread per CPU, each with a single-threaded tokio runtime, its own
//! SO_REUSEPORT listener and its own upstream keep-alive pool; only the upstream pool slots
//! (`upstream.pool_size`) are shared.

mod app;
pub mod cli;
mod http1;
pub mod openapi;
mod pool;
mod proxy;
pub mod routes;
mod server;
pub mod settings;

pub use app::Gateway;
pub use config::{GatewayConfig, UpstreamConfig};
pub use openapi::openapi;
pub use routes::{CONTROL_ROUTES, OBSERVABILITY_ROUTES, USER_ROUTES};
pub use settings::{GatewayRole, ServiceTarget, Settings, UpstreamUrl};
/// A gateway's `/config` types and its roles' route lists, kept in `stack-config` so the
/// orchestrator can check scenarios against them without depending on the gateway.
pub use stack_config::gateway as config;
