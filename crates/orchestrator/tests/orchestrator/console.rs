//! The console's server side: the one-time login URL, the session cookie it sets, the built
//! assets, the settings the UI reads and who may frame it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use orchestrator::console::{ConsoleSettings, FrameAncestor};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE, X_FRAME_OPTIONS};
use serde_json::Value;
use service_kit::{JwtSigner, Role};
use test_support::signer;

use crate::helpers::{Stack, fixture_scenarios};

fn keys() -> &'static JwtSigner {
    signer()
}

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn cookie_of(resp: &reqwest::Response) -> String {
    resp.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_login_code_becomes_an_http_only_strict_cookie_once() {
    let stack = Stack::start(fixture_scenarios()).await;
    let code = orchestrator::console::mint_login_code(keys(), "ada", Duration::from_secs(60)).unwrap();
    let login = stack.url(&format!("/console/login?code={code}"));

    let resp = browser().get(&login).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get(LOCATION).unwrap(), "/console/");
    assert_eq!(resp.headers().get(CACHE_CONTROL).unwrap(), "no-store");
    let cookie = cookie_of(&resp);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP cannot keep a Secure cookie: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert!(pair.starts_with("observastack_token="), "{pair}");

    // Behind a TLS-terminating proxy (it says so), the cookie is Secure, and so is its removal.
    let code = orchestrator::console::mint_login_code(keys(), "ada", Duration::from_secs(60)).unwrap();
    let https = browser()
        .get(stack.url(&format!("/console/login?code={code}")))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(cookie_of(&https).contains("; Secure"), "{}", cookie_of(&https));
    let code = orchestrator::console::mint_login_code(keys(), "ada", Duration::from_secs(60)).unwrap();
    let forwarded = browser()
        .get(stack.url(&format!("/console/login?code={code}")))
        .header("forwarded", "for=192.0.2.1;proto=https")
        .send()
        .await
        .unwrap();
    assert!(cookie_of(&forwarded).contains("; Secure"), "{}", cookie_of(&forwarded));
    let logout = browser()
        .post(stack.url("/console/logout"))
        .header("x-forwarded-proto", "https")
        .header("x-observastack-csrf", "1")
        .send()
        .await
        .unwrap();
    assert!(cookie_of(&logout).contains("Max-Age=0") && cookie_of(&logout).contains("; Secure"));

    // The cookie is a learner's session for the subject the code named.
    let resp = browser().get(stack.url("/api/runs")).header("cookie", &pair).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = pair.trim_start_matches("observastack_token=");
    let caller = keys().verifier().verify(token).unwrap();
    assert_eq!((caller.subject.as_str(), caller.role), ("ada", Role::Learner));

    // Used once: a second browser is refused; the signed-in one just goes on to the console.
    let again = browser().get(&login).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_of(&again).is_empty());
    assert!(again.text().await.unwrap().contains("already used"));
    let signed_in = browser().get(&login).header("cookie", &pair).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert!(cookie_of(&signed_in).is_empty(), "no second session from a spent code");
    stack.stop().await;
}

#[tokio::test]
async fn a_spent_code_stays_spent_after_a_restart() {
    let mut stack = Stack::start(fixture_scenarios()).await;
    let code = orchestrator::console::mint_login_code(keys(), "ada", Duration::from_secs(60)).unwrap();
    let login = stack.url(&format!("/console/login?code={code}"));
    assert_eq!(browser().get(&login).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    stack.restart_orchestrator().await;
    let login = stack.url(&format!("/console/login?code={code}"));
    assert_eq!(browser().get(&login).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    stack.stop().await;
}

#[tokio::test]
async fn login_codes_and_api_tokens_do_not_pass_for_each_other() {
    let stack = Stack::start(fixture_scenarios()).await;
    let code = orchestrator::console::mint_login_code(keys(), "ada", Duration::from_secs(60)).unwrap();
    let resp = browser().get(stack.url("/api/scenarios")).bearer_auth(&code).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a login code is no API token");

    let api_token = stack.token(Role::Learner);
    let resp = browser().get(stack.url(&format!("/console/login?code={api_token}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "an API token is no login code");
    assert!(cookie_of(&resp).is_empty());

    let foreign = JwtSigner::generate().unwrap();
    let forged = orchestrator::console::mint_login_code(&foreign, "eve", Duration::from_secs(60)).unwrap();
    let resp = browser().get(stack.url(&format!("/console/login?code={forged}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a code signed by another stack");

    let resp = browser().get(stack.url("/console/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no code at all");
    assert!(resp.text().await.unwrap().contains("`code`"));
    stack.stop().await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    #[derive(serde::Serialize)]
    struct Claims {
        sub: &'static str,
        aud: &'static str,
        iss: &'static str,
        iat: u64,
        nbf: u64,
        exp: u64,
        jti: uuid::Uuid,
    }
    let stack = Stack::start(fixture_scenarios()).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = keys()
        .sign_claims(&Claims {
            sub: "ada",
            aud: orchestrator::console::LOGIN_AUDIENCE,
            iss: "observastack",
            iat: now - 7200,
            nbf: now - 7200,
            exp: now - 3600,
            jti: uuid::Uuid::now_v7(),
        })
        .unwrap();
    let resp = browser().get(stack.url(&format!("/console/login?code={expired}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("expired"));
    stack.stop().await;
}

#[tokio::test]
async fn built_assets_are_served_under_console_and_settings_name_the_tools() {
    let dir = std::env::temp_dir().join(format!("observastack-console-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>console</title>").unwrap();
    std::fs::write(dir.join("assets/index-abc.js"), "console.log(1)").unwrap();
    let assets = dir.clone();
    let stack = Stack::start_with(fixture_scenarios(), move |s| {
        s.console = orchestrator::console::ConsoleSettings {
            assets: Some(assets),
            grafana_url: Some("http://127.0.0.1:3000/".to_owned()),
            grafana_dashboards: vec![("Shop".to_owned(), "/d/shop".to_owned())],
            service_health_url: Some("http://127.0.0.1:8104/health".to_owned()),
            frame_ancestors: Vec::new(),
        };
    })
    .await;

    let root = browser().get(stack.url("/")).send().await.unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers().get(LOCATION).unwrap(), "/console/");

    let index = browser().get(stack.url("/console/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert!(index.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("text/html"));
    assert_eq!(index.headers().get(CACHE_CONTROL).unwrap(), "no-cache");
    let csp = index.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    for directive in [
        "script-src 'self'",
        "connect-src 'self'",
        "frame-src 'self' http://127.0.0.1:3000 http://127.0.0.1:8104;",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }

    let js = browser().get(stack.url("/console/assets/index-abc.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.headers().get(CACHE_CONTROL).unwrap().to_str().unwrap().contains("immutable"));

    let missing = browser().get(stack.url("/console/assets/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Found by the contract run: this 404 had an empty body and no content type.
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let escape = browser().get(stack.url("/console/..%2f..%2fCargo.toml")).send().await.unwrap();
    assert_eq!(escape.status(), StatusCode::NOT_FOUND, "no way out of the assets folder");

    let settings: Value =
        browser().get(stack.url("/console/settings.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(settings["grafana_url"], "http://127.0.0.1:3000");
    assert_eq!(settings["grafana_dashboards"][0]["url"], "http://127.0.0.1:3000/d/shop");
    assert_eq!(settings["service_health_url"], "http://127.0.0.1:8104/health");
    stack.stop().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_unbuilt_console_says_how_to_build_it() {
    let stack = Stack::start(fixture_scenarios()).await;
    let resp = browser().get(stack.url("/console/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.text().await.unwrap().contains("scripts/ensure-console.sh"));
    let settings: Value =
        browser().get(stack.url("/console/settings.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(settings["grafana_url"], Value::Null);
    stack.stop().await;
}

/// A built console with just an `index.html`, in a fresh temporary folder.
fn built_console() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("observastack-console-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>console</title>").unwrap();
    dir
}

/// The `frame-ancestors` directive of the console page's CSP, and its `X-Frame-Options`.
async fn framing_of_the_console(frame_ancestors: Vec<FrameAncestor>) -> (String, Option<String>) {
    let dir = built_console();
    let assets = dir.clone();
    let stack = Stack::start_with(fixture_scenarios(), move |s| {
        s.console = ConsoleSettings { assets: Some(assets), frame_ancestors, ..ConsoleSettings::default() };
    })
    .await;
    let page = browser().get(stack.url("/console/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    let directives: Vec<&str> = csp.split(';').map(str::trim).filter(|d| d.starts_with("frame-ancestors")).collect();
    assert_eq!(directives.len(), 1, "one frame-ancestors directive in {csp}");
    let options = page.headers().get(X_FRAME_OPTIONS).map(|v| v.to_str().unwrap().to_owned());
    stack.stop().await;
    std::fs::remove_dir_all(dir).ok();
    (directives[0].to_owned(), options)
}

#[tokio::test]
async fn nobody_may_frame_the_console_unless_an_origin_is_configured() {
    let (directive, options) = framing_of_the_console(Vec::new()).await;
    assert_eq!(directive, "frame-ancestors 'none'");
    assert_eq!(options.as_deref(), Some("DENY"), "old browsers are told the same");
}

#[tokio::test]
async fn the_console_may_be_framed_by_exactly_the_configured_origin() {
    let preview = "https://8081-amaranth-smelt-9ba20cc1.ws-eu02.gitpod.io".parse().unwrap();
    let (directive, options) = framing_of_the_console(vec![preview]).await;
    assert_eq!(directive, "frame-ancestors https://8081-amaranth-smelt-9ba20cc1.ws-eu02.gitpod.io");
    assert_eq!(options, None, "X-Frame-Options has no allow-list; DENY would contradict the CSP");

    let both = vec!["https://*.ws-eu02.gitpod.io".parse().unwrap(), "http://localhost:8081".parse().unwrap()];
    let (directive, _) = framing_of_the_console(both).await;
    assert_eq!(directive, "frame-ancestors https://*.ws-eu02.gitpod.io http://localhost:8081");
}

/// Runs the orchestrator binary with these frame ancestors and no JWT keys: it must stop
/// before serving anything; returns its exit code and stderr.
fn start_orchestrator(args: &[&str], env: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.args(args)
        .env_remove("OBSERVASTACK_JWT_PUBLIC_KEYS")
        .env_remove("OBSERVASTACK_JWT_PRIVATE_KEY")
        .env_remove("OBSERVASTACK_FRAME_ANCESTORS");
    if let Some(value) = env {
        cmd.env("OBSERVASTACK_FRAME_ANCESTORS", value);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_console_frame_ancestor_that_is_not_an_origin_stops_the_orchestrator_at_start_up() {
    for (args, env) in [
        (&["--frame-ancestor", "https://ide.example.com/preview"][..], None),
        (&["--frame-ancestor", "*"][..], None),
        (&[][..], Some("https://ide.example.com,'self'")),
    ] {
        let (code, stderr) = start_orchestrator(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("--frame-ancestor"), "the error names the option: {stderr}");
        assert!(stderr.contains("http(s)://host[:port]"), "and says what is expected: {stderr}");
    }
    // An empty list (Docker Compose's default) is no frame ancestor, not an error: start-up
    // goes on to the next requirement, the JWT keys.
    let (code, stderr) = start_orchestrator(&[], Some(""));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("OBSERVASTACK_JWT_PUBLIC_KEYS") && !stderr.contains("frame-ancestor"), "{stderr}");
}
