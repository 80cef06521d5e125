//! Black-box tests of the shop against real PostgreSQL: each test gets its own database and
//! starts the shop in-process on port 0. One test binary keeps link time down.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod catalog;
mod checkout;
mod config;
mod helpers;
mod knobs;
mod pg_restart;
mod startup;
