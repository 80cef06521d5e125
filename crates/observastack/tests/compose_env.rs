//! `scripts/compose-env.sh`, the Docker Compose stack's keys: what it writes into `.env` is what
//! the services read, the tokens OpenSSL signs are the tokens service-kit accepts, and a
//! rotation keeps the old key until its cut-off.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use service_kit::{JwtKeys, JwtSigner, Role};

fn script(env_file: &Path, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/compose-env.sh"))
        .args(args)
        .env("OBSERVASTACK_ENV_FILE", env_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "compose-env.sh {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn read_env(env_file: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(env_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn the_compose_keys_are_the_ones_the_services_read_and_openssl_tokens_pass_their_checks() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    script(&env_file, &[]);
    let env = read_env(&env_file);
    let keys = JwtKeys::from_source(&env["OBSERVASTACK_JWT_PUBLIC_KEYS"]).unwrap();
    let signer = JwtSigner::from_source(&env["OBSERVASTACK_JWT_PRIVATE_KEY"]).unwrap();
    assert_eq!(keys.keys().len(), 1);
    assert_eq!(keys.keys()[0].kid(), signer.kid(), "the script's kid is service-kit's");
    assert!(!env["OBSERVASTACK_JWT_PUBLIC_KEYS"].contains("PRIVATE"));

    let service = keys.verify(&env["OBSERVASTACK_SERVICE_TOKEN"]).unwrap();
    assert_eq!(service.role, Role::Service);
    for role in [Role::Learner, Role::Instructor, Role::Service] {
        let token = script(&env_file, &["token", &role.to_string(), "1"]);
        assert_eq!(keys.verify(&token).unwrap().role, role);
    }
    // The login code is the console's audience, not an API token.
    let login = script(&env_file, &["login"]);
    let code = login.split("code=").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(keys.verify(code).is_err());
    let claims: serde_json::Value = keys.decode(code, "observastack-console-login").unwrap();
    assert_eq!(claims["sub"], "learner");

    // Run again, nothing changes: the keys and the service token stay.
    script(&env_file, &[]);
    assert_eq!(read_env(&env_file), env);
}

#[test]
fn a_compose_rotation_accepts_the_old_key_until_its_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    script(&env_file, &[]);
    let before = read_env(&env_file);
    let issued = script(&env_file, &["token", "learner", "2"]);

    script(&env_file, &["rotate", "1"]);
    let after = read_env(&env_file);
    let keys = JwtKeys::from_source(&after["OBSERVASTACK_JWT_PUBLIC_KEYS"]).unwrap();
    let new = JwtSigner::from_source(&after["OBSERVASTACK_JWT_PRIVATE_KEY"]).unwrap();
    let old = JwtSigner::from_source(&before["OBSERVASTACK_JWT_PRIVATE_KEY"]).unwrap();
    assert_ne!(new.kid(), old.kid());
    assert_eq!(keys.keys()[0].kid(), new.kid(), "the current key first");
    assert!(keys.keys()[0].not_after().is_none());
    let retired = keys.keys().iter().find(|k| k.kid() == old.kid()).unwrap();
    assert!(retired.not_after().is_some_and(|at| at > chrono::Utc::now()), "{retired:?}");
    assert_eq!(keys.verify(&issued).unwrap().role, Role::Learner, "accepted until the cut-off");
    assert_ne!(after["OBSERVASTACK_SERVICE_TOKEN"], before["OBSERVASTACK_SERVICE_TOKEN"], "signed anew");
    assert!(keys.verify(&after["OBSERVASTACK_SERVICE_TOKEN"]).is_ok());

    // With no grace at all, the previous key is refused once its cut-off has passed.
    script(&env_file, &["rotate", "0"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let keys = JwtKeys::from_source(&read_env(&env_file)["OBSERVASTACK_JWT_PUBLIC_KEYS"]).unwrap();
    let refused = keys.verify(&new.mint("ada", Role::Learner, std::time::Duration::from_secs(60)).unwrap());
    assert!(refused.unwrap_err().to_string().contains("retired"));
    // The first key is still inside its hour.
    assert!(keys.verify(&issued).is_ok());
}

#[test]
fn an_env_file_with_the_old_shared_secret_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, format!("OBSERVASTACK_JWT_SECRET={}\nPOSTGRES_PASSWORD=kept\n", "ab".repeat(32)))
        .unwrap();
    script(&env_file, &[]);
    let env = read_env(&env_file);
    assert!(!env.contains_key("OBSERVASTACK_JWT_SECRET"), "{env:?}");
    assert_eq!(env["POSTGRES_PASSWORD"], "kept");
    assert!(JwtKeys::from_source(&env["OBSERVASTACK_JWT_PUBLIC_KEYS"]).is_ok());
}
