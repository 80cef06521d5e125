//! The stack's local state: the JWT signing secret (created once, mode 0600) and log files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use service_kit::JwtKeys;

const SECRET_FILE: &str = "jwt-secret";

pub fn secret_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SECRET_FILE)
}

pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// Returns the stack's secret, creating a random one on first use. Nothing ships with a
/// default secret: a fresh stack makes its own.
pub fn ensure_secret(state_dir: &Path) -> anyhow::Result<String> {
    let path = secret_path(state_dir);
    if path.exists() {
        return read_secret(state_dir);
    }
    fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the secret: {e}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret)
}

pub fn read_secret(state_dir: &Path) -> anyhow::Result<String> {
    let path = secret_path(state_dir);
    let secret = fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (start the stack once with `observastack up`)", path.display()))?;
    Ok(secret.trim().to_owned())
}

pub fn load_keys(state_dir: &Path) -> anyhow::Result<JwtKeys> {
    Ok(JwtKeys::from_secret(read_secret(state_dir)?.as_bytes())?)
}
