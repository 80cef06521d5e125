//! What every facts test needs to talk to a lake that checks tokens: the keys it verifies with,
//! tokens of each role, and clients that send one.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses a part; a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use service_kit::{JwtKeys, Role};

/// The test stack's secret (only ever used by these tests).
pub const SECRET: &[u8] = b"facts-tests-secret-0123456789abcdef";

pub fn keys() -> Arc<JwtKeys> {
    Arc::new(JwtKeys::from_secret(SECRET).unwrap())
}

pub fn token(role: Role) -> String {
    keys().mint(&format!("test-{role}"), role, Duration::from_secs(3600)).unwrap()
}

/// A client whose every request carries a token of `role`.
pub fn client(role: Role) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", token(role)).parse().unwrap());
    reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build().unwrap()
}
