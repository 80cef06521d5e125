//! The gateway's own HTTP/1.1 code: a [`server`] for the user role's plain requests, a
//! [`client`] for the upstreams, and the wire rules both share ([`codec`]).
//!
//! The boundary: nothing here imports the rest of the crate. The gateway plugs its routes in
//! through [`server::Handler`] and reaches its upstreams through [`client::ConnPool`]; what
//! hyper serves (every request that is not plain, every role but the user's) stays hyper's.

pub mod client;
pub mod codec;
mod conn;
pub mod server;
mod timer;

pub use timer::LazyTimer;

#[cfg(test)]
mod tests;
