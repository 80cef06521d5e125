//! The OpenAPI documents checked in under `docs/api/` are the ones the code generates.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_openapi_documents_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api");
    let stale = observastack::openapi_cmd::stale_documents(&dir).expect("generating documents");
    assert!(
        stale.is_empty(),
        "docs/api is out of date ({}); run `cargo run -p observastack -- openapi --out docs/api`",
        stale.join(", ")
    );
}

#[test]
fn openapi_check_exits_nonzero_and_names_a_stale_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_observastack"))
        .args(["openapi", "--out"])
        .arg(dir.path())
        .status()
        .expect("running observastack openapi");
    assert!(status.success());
    std::fs::write(dir.path().join("shop.json"), "{}\n").expect("overwriting shop.json");
    let out = Command::new(env!("CARGO_BIN_EXE_observastack"))
        .args(["openapi", "--check", "--out"])
        .arg(dir.path())
        .output()
        .expect("running observastack openapi --check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shop.json") && !stderr.contains("gateway-user.json"), "{stderr}");
}
