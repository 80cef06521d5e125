//! The stack's local state: its token keys and log files. The Ed25519 private key
//! (`jwt-private.pem`, mode 0600) goes to the orchestrator and the CLI only; the public keys
//! (`jwt-public.pem`: the current key and any retired one until its cut-off) to every service.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use service_kit::{JwtKeys, JwtSigner};

const PRIVATE_KEY_FILE: &str = "jwt-private.pem";
const PUBLIC_KEYS_FILE: &str = "jwt-public.pem";
/// The HS256 secret of earlier versions, which every service held; replaced on first `up`.
const OLD_SECRET_FILE: &str = "jwt-secret";

pub fn private_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PRIVATE_KEY_FILE)
}

pub fn public_keys_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PUBLIC_KEYS_FILE)
}

pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// What `ensure_keys` did, for `up` to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysOrigin {
    Existing,
    Created,
    /// The old HS256 secret file was removed in favour of a new key pair.
    MigratedFromSecret,
}

/// Returns the stack's private key, creating a key pair on first use (nothing ships with a
/// default key) and dropping retired public keys whose cut-off has passed. An old state dir's
/// HS256 secret is replaced: tokens it signed were never going to be accepted again.
pub fn ensure_keys(state_dir: &Path) -> anyhow::Result<(JwtSigner, KeysOrigin)> {
    let private = private_key_path(state_dir);
    let old_secret = state_dir.join(OLD_SECRET_FILE);
    if private.exists() {
        let signer = load_keys(state_dir)?;
        let public = public_keys_path(state_dir);
        let keys = match fs::read_to_string(&public) {
            Ok(text) => JwtKeys::from_pem(&text).with_context(|| format!("{} is unusable", public.display()))?,
            // Lost or never written: the private key alone rebuilds it.
            Err(_) => signer.verifier(),
        };
        let current = current_keys(&signer, &keys, &public)?;
        if current.to_pem() != keys.to_pem() || !public.exists() {
            write_file(&public, current.to_pem().as_bytes(), 0o644)?;
        }
        return Ok((signer, KeysOrigin::Existing));
    }
    fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let signer = JwtSigner::generate()?;
    write_file(&private, signer.private_key_pem()?.as_bytes(), 0o600)?;
    write_file(&public_keys_path(state_dir), signer.verifier().to_pem().as_bytes(), 0o644)?;
    if old_secret.exists() {
        fs::remove_file(&old_secret).with_context(|| format!("cannot remove {}", old_secret.display()))?;
        return Ok((signer, KeysOrigin::MigratedFromSecret));
    }
    Ok((signer, KeysOrigin::Created))
}

/// The public keys worth keeping: the signer's first (it must be there and current), then
/// every retired key whose cut-off is still ahead.
fn current_keys(signer: &JwtSigner, keys: &JwtKeys, path: &Path) -> anyhow::Result<JwtKeys> {
    match keys.keys().iter().find(|k| k.kid() == signer.kid()) {
        Some(own) if own.not_after().is_some() => anyhow::bail!(
            "{} marks the private key's public half ({}) as retired; the private key must be the current one",
            path.display(),
            signer.kid()
        ),
        Some(_) => {}
        None => anyhow::bail!(
            "{} does not hold the private key's public half ({}); remove both key files to start afresh \
             (every issued token stops working)",
            path.display(),
            signer.kid()
        ),
    }
    let now = Utc::now();
    let retired = keys.keys().iter().filter(|k| k.not_after().is_some_and(|at| at > now)).cloned();
    Ok(JwtKeys::new(std::iter::once(signer.public_key()).chain(retired).collect())?)
}

/// The stack's private key, for minting tokens (`token`, `config`, `scenario`).
pub fn load_keys(state_dir: &Path) -> anyhow::Result<JwtSigner> {
    let path = private_key_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) if state_dir.join(OLD_SECRET_FILE).exists() => anyhow::bail!(
            "{} holds the shared HS256 secret of an earlier ObservaStack; start the stack once with \
             `observastack up`, which replaces it with an Ed25519 key pair",
            state_dir.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("cannot read {} (start the stack once with `observastack up`)", path.display())
            });
        }
    };
    JwtSigner::from_pem(&text).with_context(|| format!("{} is unusable", path.display()))
}

/// Replaces the private key with a new one. The old public key stays accepted for `grace`
/// (a `# not-after:` cut-off), so tokens already out keep working until then; services read
/// the keys at start, so the stack must be restarted to use them. Returns the old and the new
/// key's `kid` and the cut-off.
pub fn rotate_keys(state_dir: &Path, grace: Duration) -> anyhow::Result<(String, String, DateTime<Utc>)> {
    let (old, _) = ensure_keys(state_dir)?;
    let public = public_keys_path(state_dir);
    let keys = JwtKeys::from_pem(&fs::read_to_string(&public)?)?;
    let cut_off = Utc::now() + chrono::Duration::from_std(grace).context("grace period too long")?;
    let new = JwtSigner::generate()?;
    let mut rotated = vec![new.public_key(), old.public_key().retired_at(cut_off)];
    rotated.extend(keys.keys().iter().filter(|k| k.kid() != old.kid()).cloned());
    let rotated = JwtKeys::new(rotated)?;
    // The public keys first: a crash in between leaves the old private key still listed.
    write_file(&public, rotated.to_pem().as_bytes(), 0o644)?;
    write_file(&private_key_path(state_dir), new.private_key_pem()?.as_bytes(), 0o600)?;
    Ok((old.kid().to_owned(), new.kid().to_owned(), cut_off))
}

/// Writes `path` whole or not at all (a temporary file renamed over it), with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::Role;

    #[test]
    fn the_first_start_creates_a_private_key_only_its_owner_reads_and_public_keys_with_its_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, origin) = ensure_keys(dir.path()).unwrap();
        assert_eq!(origin, KeysOrigin::Created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(private_key_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = fs::read_to_string(public_keys_path(dir.path())).unwrap();
        assert!(public.contains(&format!("# kid: {}", signer.kid())) && !public.contains("PRIVATE"), "{public}");
        let (again, origin) = ensure_keys(dir.path()).unwrap();
        assert_eq!((again.kid(), origin), (signer.kid(), KeysOrigin::Existing));
    }

    #[test]
    fn an_old_state_dir_with_a_shared_secret_is_migrated_to_a_key_pair() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OLD_SECRET_FILE), "0123456789abcdef0123456789abcdef").unwrap();
        let refused = load_keys(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("HS256") && refused.contains("observastack up"), "{refused}");
        let (_, origin) = ensure_keys(dir.path()).unwrap();
        assert_eq!(origin, KeysOrigin::MigratedFromSecret);
        assert!(!dir.path().join(OLD_SECRET_FILE).exists(), "the shared secret is gone");
        assert!(load_keys(dir.path()).is_ok());
    }

    #[test]
    fn a_rotation_keeps_the_old_key_until_its_cut_off_and_the_next_start_drops_it_after() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _) = ensure_keys(dir.path()).unwrap();
        let issued = old.mint("ada", Role::Learner, Duration::from_secs(3600)).unwrap();
        let (old_kid, new_kid, _) = rotate_keys(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(old_kid, old.kid());
        let keys = JwtKeys::from_pem(&fs::read_to_string(public_keys_path(dir.path())).unwrap()).unwrap();
        assert_eq!(keys.verify(&issued).unwrap().subject, "ada", "accepted before the cut-off");
        let new = load_keys(dir.path()).unwrap();
        assert_eq!(new.kid(), new_kid);
        assert!(keys.verify(&new.mint("bo", Role::Learner, Duration::from_secs(60)).unwrap()).is_ok());

        // A rotation with no grace: the old key is refused at once, and the next start
        // drops it from the file.
        let (second_old, _, _) = rotate_keys(dir.path(), Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let keys = JwtKeys::from_pem(&fs::read_to_string(public_keys_path(dir.path())).unwrap()).unwrap();
        let refused = keys.verify(&new.mint("bo", Role::Learner, Duration::from_secs(60)).unwrap()).unwrap_err();
        assert!(refused.to_string().contains("retired"), "{refused}");
        ensure_keys(dir.path()).unwrap();
        let kept = JwtKeys::from_pem(&fs::read_to_string(public_keys_path(dir.path())).unwrap()).unwrap();
        let kids: Vec<&str> = kept.keys().iter().map(|k| k.kid()).collect();
        assert!(!kids.contains(&second_old.as_str()) && kids.contains(&old_kid.as_str()), "{kids:?}");
        assert_eq!(kids.len(), 2, "the current key and the one still in its grace period: {kids:?}");
    }

    #[test]
    fn public_keys_without_the_private_keys_half_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_keys(dir.path()).unwrap();
        let stranger = JwtSigner::generate().unwrap();
        fs::write(public_keys_path(dir.path()), stranger.verifier().to_pem()).unwrap();
        let refused = ensure_keys(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("does not hold the private key's public half"), "{refused}");
    }
}
