//! What every facts test needs to talk to a lake that checks tokens: the keys it verifies with,
//! tokens of each role, and clients that send one.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses a part; a failed unwrap is a failed test.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use service_kit::{JwtKeys, JwtSigner, Role};

/// The test stack's private key (the orchestrator's side); the lake gets only [`keys`].
pub fn signer() -> &'static JwtSigner {
    static SIGNER: OnceLock<JwtSigner> = OnceLock::new();
    SIGNER.get_or_init(|| JwtSigner::generate().unwrap())
}

pub fn keys() -> Arc<JwtKeys> {
    Arc::new(signer().verifier())
}

/// The public keys as `OBSERVASTACK_JWT_PUBLIC_KEYS` takes them, for a `facts` process.
pub fn public_keys_pem() -> String {
    signer().verifier().to_pem()
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
