//! Integration tests of the orchestrator against real services: PostgreSQL, the shop, the
//! user gateway and the runner, all in-process. One test binary, so they link once.

#![allow(clippy::unwrap_used)]

mod console;
mod flood;
mod helpers;
mod hostile;
mod hub;
mod lifecycle;
mod overload;
mod restart;
mod tokens;
mod verdicts;
