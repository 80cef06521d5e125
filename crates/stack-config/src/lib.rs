//! The runtime configuration types of the services scenarios patch, in a crate of their own so
//! that the orchestrator and the CLI validate scenario files against the very types the services
//! serve, without depending on the services themselves.
//!
//! - [`shop`]: the shop's `/config` and its business routes.
//! - [`gateway`]: a gateway's `/config` and the routes of its three roles.
//! - [`catalog`]: the services a scenario may patch, for lint and the run engine.

pub mod catalog;
pub mod gateway;
pub mod shop;

pub use catalog::service_catalog;
