//! What every facts test needs to talk to a lake that checks tokens: the keys it verifies with,
//! tokens of each role, and clients that send one.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses a part; a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use service_kit::{JwtKeys, Role};
use test_support::{public_keys, signer};

/// What the lake verifies with: `test_support::public_keys`, as `Options` takes them.
pub fn keys() -> Arc<JwtKeys> {
    Arc::new(public_keys())
}

/// The public keys as `OBSERVASTACK_JWT_PUBLIC_KEYS` takes them, for a `facts` process.
pub fn public_keys_pem() -> String {
    public_keys().to_pem()
}

pub fn token(role: Role) -> String {
    signer().mint(&format!("test-{role}"), role, Duration::from_secs(3600)).unwrap()
}

/// A client whose every request carries a token of `role`.
pub fn client(role: Role) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", token(role)).parse().unwrap());
    reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build().unwrap()
}
