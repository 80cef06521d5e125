//! Black-box tests of the runner: its engine against a target we slow down, its journeys
//! against the real shop behind the real user gateway (fresh PostgreSQL database per test),
//! and its `/config` and `/slis` API. One test binary keeps link time down.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

mod api;
mod helpers;
mod journeys;
mod load;
