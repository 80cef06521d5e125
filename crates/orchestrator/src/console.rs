//! The console's server side: serves the built web UI (`console/dist`) under `/console/`,
//! exchanges the one-time login URL that `observastack up` prints for an HttpOnly,
//! `SameSite=Strict` session cookie, tells the UI which optional tools (Grafana, the
//! Service Health view of the `facts` service) are configured, and says who may frame it.
//!
//! A login code is a short-lived EdDSA token signed with the stack's private key under its own
//! audience, so it is never accepted as an API token; its `jti` is recorded in
//! `console_logins` on first use, which makes it single-use across restarts too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use service_kit::auth::{ISSUER, Rejection, TOKEN_COOKIE, token_from_headers};
use service_kit::{ApiError, JwtKeys, JwtSigner, Role};
use sqlx::PgPool;
use tower::ServiceExt as _;
use tower_http::services::ServeDir;
use uuid::Uuid;

/// Audience of login codes: distinct from API tokens' (`observastack`), so neither passes for
/// the other.
pub const LOGIN_AUDIENCE: &str = "observastack-console-login";
/// How long a printed login URL stays usable.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of the session cookie (and the token in it).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Path of the login route; `observastack up` prints `{control gateway}{LOGIN_PATH}?code=…`.
pub const LOGIN_PATH: &str = "/console/login";

/// What the console serves and links to.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// The built UI (`console/dist`); `None` or a folder without `index.html` serves a page
    /// saying how to build it.
    pub assets: Option<PathBuf>,
    /// Grafana's address as the browser reaches it; the Observability tab embeds it.
    pub grafana_url: Option<String>,
    /// Dashboards offered by the Observability tab's switch: (title, path below Grafana's URL).
    pub grafana_dashboards: Vec<(String, String)>,
    /// The `facts` service's Service Health view as the browser reaches it.
    pub service_health_url: Option<String>,
    /// Origins allowed to show the console in a frame (an IDE's preview pane), exactly these;
    /// none means nobody (`frame-ancestors 'none'` and `X-Frame-Options: DENY`).
    pub frame_ancestors: Vec<FrameAncestor>,
}

/// An origin allowed to frame the console, for its CSP's `frame-ancestors`:
/// `http(s)://host[:port]`, lowercased. The host may start with one `*.` label
/// (`https://*.example.com` matches every subdomain of `example.com`, not `example.com` itself),
/// because an IDE's preview pane can live on a host generated per view; the rest of the host
/// needs at least two labels, so `https://*.com` is refused. Nothing else passes: no path,
/// query or user, no `*` or wildcard port, no keywords (`'self'`), no other scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAncestor(String);

impl FrameAncestor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FrameAncestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for FrameAncestor {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected an origin http(s)://host[:port] such as https://example.com:8443 \
                                or https://*.example.com";
        let fail = |why: &str| Err(format!("`{value}`: {why}; {EXPECTED}"));
        let Some((scheme, rest)) = value.split_once("://") else {
            return fail("not an origin");
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return fail("the scheme must be http or https");
        }
        if rest.contains(['/', '?', '#', '@', '\\']) {
            return fail("an origin has no path, query, fragment or user");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let valid = !port.is_empty()
                    && port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok_and(|p| p > 0);
                if !valid {
                    return fail("the port must be a number from 1 to 65535");
                }
                (host, Some(port))
            }
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host.as_str()),
        };
        if name.contains('*') {
            return fail("only a leading `*.` label may be a wildcard");
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return fail("the host must be a DNS name or an IPv4 address");
        }
        if wildcard && name.split('.').count() < 2 {
            return fail("a wildcard needs at least two labels after `*.`");
        }
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        Ok(Self(format!("{scheme}://{host}{port}")))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LoginClaims {
    sub: String,
    aud: String,
    iss: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: Uuid,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Mints a one-time login code for `subject` (a learner), valid for `ttl`.
pub fn mint_login_code(keys: &JwtSigner, subject: &str, ttl: Duration) -> anyhow::Result<String> {
    let now = now_secs();
    let claims = LoginClaims {
        sub: subject.to_owned(),
        aud: LOGIN_AUDIENCE.to_owned(),
        iss: ISSUER.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs(),
        jti: Uuid::now_v7(),
    };
    Ok(keys.sign_claims(&claims)?)
}

struct ConsoleState {
    settings: ConsoleSettings,
    /// `Content-Security-Policy` of the console's pages: its own scripts, styles and API only,
    /// plus Grafana and Service Health in a frame when configured, framed only by
    /// `frame_ancestors`.
    csp: HeaderValue,
    /// `X-Frame-Options: DENY` for browsers without CSP level 2, only when nobody may frame the
    /// console: it has no allow-list, so with frame ancestors it would contradict the CSP.
    frame_options: Option<HeaderValue>,
    /// Verifies login codes and sessions.
    keys: Arc<JwtKeys>,
    /// Mints the session a login code is exchanged for.
    signer: Arc<JwtSigner>,
    db: PgPool,
}

/// Routes under `/console` plus `/` → `/console/`. None needs a token: the assets hold no
/// secrets, and the login route is how a browser gets one.
pub fn router(settings: ConsoleSettings, keys: Arc<JwtKeys>, signer: Arc<JwtSigner>, db: PgPool) -> Router {
    let frames: String = [settings.grafana_url.as_deref(), settings.service_health_url.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(origin_of)
        .map(|o| format!(" {o}"))
        .collect();
    let ancestors = if settings.frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        settings.frame_ancestors.iter().map(FrameAncestor::as_str).collect::<Vec<_>>().join(" ")
    };
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'; frame-src 'self'{frames}; frame-ancestors {ancestors}; base-uri 'none'; \
         form-action 'self'"
    );
    // Every part is validated ASCII, so this cannot fail; if it did, framing stays refused.
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    let frame_options = settings.frame_ancestors.is_empty().then(|| HeaderValue::from_static("DENY"));
    let state = Arc::new(ConsoleState { settings, csp, frame_options, keys, signer, db });
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(LOGIN_PATH, get(login))
        .route("/console/logout", post(logout))
        .route("/console/settings.json", get(settings_json))
        .route("/console/", get(asset))
        .route("/console/{*path}", get(asset))
        .with_state(state)
}

/// `scheme://host[:port]` of a URL, for the CSP's frame sources.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())?;
    if !matches!(scheme, "http" | "https") || host.contains([' ', ';', ',', '\'']) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /console/login?code=…`: a valid, unused code becomes the session cookie and the
/// browser goes on to the console (the code leaves the address bar at once).
async fn login(State(state): State<Arc<ConsoleState>>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let already_in =
        token_from_headers(&headers).is_some_and(|t| state.keys.verify(t).is_ok_and(|c| c.may(Role::Learner)));
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        if already_in {
            return Redirect::to("/console/").into_response();
        }
        return login_failed(StatusCode::BAD_REQUEST, "The login address lacks its `code` parameter.");
    };
    let claims = match state.keys.decode::<LoginClaims>(&code, LOGIN_AUDIENCE) {
        Ok(claims) => claims,
        Err(_) if already_in => return Redirect::to("/console/").into_response(),
        Err(err) => {
            let why = match err {
                Rejection::Expired => "This login link has expired.",
                _ => "This login link is not valid for this stack.",
            };
            return login_failed(StatusCode::UNAUTHORIZED, why);
        }
    };
    let expires = chrono::DateTime::from_timestamp(claims.exp as i64, 0).unwrap_or_else(chrono::Utc::now);
    let first_use = sqlx::query(
        "INSERT INTO console_logins (jti, subject, expires_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(claims.jti)
    .bind(&claims.sub)
    .bind(expires)
    .execute(&state.db)
    .await;
    match first_use {
        Ok(done) if done.rows_affected() == 1 => {}
        // Reloading the used link in a browser that is already signed in just opens the console.
        Ok(_) if already_in => return Redirect::to("/console/").into_response(),
        Ok(_) => {
            return login_failed(StatusCode::UNAUTHORIZED, "This login link was already used; each link works once.");
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot record a console login");
            return login_failed(StatusCode::SERVICE_UNAVAILABLE, "The login could not be recorded; try again.");
        }
    }
    let token = match state.signer.mint(&claims.sub, Role::Learner, SESSION_TTL) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(error = %err, "cannot mint a console session");
            return login_failed(StatusCode::INTERNAL_SERVER_ERROR, "The session could not be created.");
        }
    };
    tracing::info!(subject = %claims.sub, "console login");
    let cookie = format!(
        "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}; Max-Age={}",
        secure_attribute(&headers),
        SESSION_TTL.as_secs()
    );
    let mut resp = Redirect::to("/console/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// `; Secure` when the browser reached the console over HTTPS: a TLS-terminating proxy in
/// front (a load balancer, Caddy, an IDE's preview) says so with `X-Forwarded-Proto` or
/// `Forwarded: proto=https`. A client claiming HTTPS over plain HTTP only loses its own
/// cookie, so the header needs no trust.
pub fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .next()
            .into_iter()
            .flat_map(|first| first.split(';'))
            .any(|pair| pair.trim().eq_ignore_ascii_case("proto=https"))
    });
    if forwarded_proto || forwarded { "; Secure" } else { "" }
}

/// `POST /console/logout`: forgets the cookie.
async fn logout(headers: HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict{}; Max-Age=0", secure_attribute(&headers));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp
}

fn login_failed(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>ObservaStack login</title>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5\">\
         <h1>Cannot sign in</h1><p>{why}</p>\
         <p>Restart the stack (<code>bash scripts/up.sh</code>) to get a fresh login address, \
         or use the API with a token from <code>observastack token</code>.</p></body></html>"
    );
    let mut resp = (status, Html(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Dashboard<'a> {
    title: &'a str,
    url: String,
}

/// Which optional tools the console's Observability tab offers; `null` when not configured.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleSettings)]
pub(crate) struct PublicSettings<'a> {
    grafana_url: Option<&'a str>,
    grafana_dashboards: Vec<Dashboard<'a>>,
    service_health_url: Option<&'a str>,
}

/// `GET /console/settings.json`: which optional tools the Observability tab offers.
async fn settings_json(State(state): State<Arc<ConsoleState>>) -> Response {
    let s = &state.settings;
    let grafana = s.grafana_url.as_deref().map(|u| u.trim_end_matches('/'));
    let grafana_dashboards = match grafana {
        Some(base) => s
            .grafana_dashboards
            .iter()
            .map(|(title, path)| Dashboard { title, url: format!("{base}/{}", path.trim_start_matches('/')) })
            .collect(),
        None => Vec::new(),
    };
    let body = PublicSettings {
        grafana_url: grafana,
        grafana_dashboards,
        service_health_url: s.service_health_url.as_deref(),
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `/console{path}`, cut short so an error cannot echo an arbitrarily long path.
fn req_path_for_error(path: &str) -> String {
    let shown: String = path.chars().take(80).collect();
    format!("/console{shown}")
}

/// The built UI. Vite's hashed files under `assets/` are cached for good; `index.html` is
/// revalidated so a rebuilt console shows up on reload.
async fn asset(State(state): State<Arc<ConsoleState>>, req: Request) -> Response {
    let Some(dir) = state.settings.assets.clone().filter(|d| d.join("index.html").is_file()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>ObservaStack console</title>\
                 <body style=\"font-family:sans-serif\"><h1>The console is not built</h1>\
                 <p>Run <code>bash scripts/ensure-console.sh</code> (or <code>bash scripts/up.sh</code>, which does it) \
                 and reload.</p></body></html>",
            ),
        )
            .into_response();
    };
    let path = req.uri().path().strip_prefix("/console").unwrap_or("/").to_owned();
    let immutable = path.starts_with("/assets/");
    // ServeDir's 404 has an empty body; every error of the stack is JSON.
    let not_found = || ApiError::NotFound(format!("no console file at {}", req_path_for_error(&path))).into_response();
    let Ok(uri) = path.parse::<axum::http::Uri>() else {
        return not_found();
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let served = ServeDir::new(dir).oneshot(Request::from_parts(parts, body)).await;
    let mut resp = match served {
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => return not_found(),
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(never) => match never {},
    };
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, state.csp.clone());
    if let Some(deny) = &state.frame_options {
        headers.insert(header::X_FRAME_OPTIONS, deny.clone());
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable { "public, max-age=31536000, immutable" } else { "no-cache" }),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::{FrameAncestor, origin_of};

    fn ancestor(value: &str) -> Result<String, String> {
        value.parse::<FrameAncestor>().map(|a| a.to_string())
    }

    #[test]
    fn frame_ancestors_are_http_origins_with_at_most_a_leading_wildcard_label() {
        for (given, kept) in [
            ("https://8081-abc.ws-eu02.gitpod.io", "https://8081-abc.ws-eu02.gitpod.io"),
            ("HTTPS://Example.COM:8443", "https://example.com:8443"),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("http://localhost", "http://localhost"),
            ("https://*.ws-eu02.gitpod.io", "https://*.ws-eu02.gitpod.io"),
        ] {
            assert_eq!(ancestor(given).as_deref(), Ok(kept), "{given}");
        }
    }

    #[test]
    fn anything_but_an_origin_is_refused_as_a_frame_ancestor() {
        for bad in [
            "",
            "example.com",
            "*",
            "'self'",
            "'none'",
            "https:",
            "https://",
            "ftp://example.com",
            "javascript://example.com",
            "https://example.com/",
            "https://example.com/console",
            "https://example.com?x=1",
            "https://user@example.com",
            "https://example.com:*",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:",
            "https://*",
            "https://*.com",
            "https://a.*.example.com",
            "https://*example.com",
            "https://exa mple.com",
            "https://example.com; script-src *",
            "https://-example.com",
            "https://example..com",
            "https://[::1]:8080",
        ] {
            let err = ancestor(bad).expect_err(bad);
            assert!(err.contains("http(s)://host[:port]"), "{bad}: {err}");
        }
    }

    #[test]
    fn frame_sources_are_bare_origins() {
        assert_eq!(origin_of("http://127.0.0.1:3000/d/shop?kiosk").as_deref(), Some("http://127.0.0.1:3000"));
        assert_eq!(origin_of("https://grafana.example").as_deref(), Some("https://grafana.example"));
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert_eq!(origin_of("http://a; script-src *"), None);
    }
}

/// The console's routes in the orchestrator's OpenAPI document (which the control gateway's
/// adopts): documentation only, the handlers above are routed by [`router`]. Browser pages
/// answer their errors as HTML pages, which is what a browser shows.
pub(crate) mod openapi {
    #![allow(dead_code)]

    use service_kit::error::ErrorBody;

    pub(crate) use super::{Dashboard, PublicSettings};

    /// Sends a browser to the console.
    #[utoipa::path(get, path = "/", tag = "console", responses(
        (status = 303, description = "To `/console/`", headers(("Location" = String))),
    ))]
    pub(crate) fn root() {}

    /// Sends a browser to the console.
    #[utoipa::path(get, path = "/console", tag = "console", responses(
        (status = 303, description = "To `/console/`", headers(("Location" = String))),
    ))]
    pub(crate) fn console() {}

    /// The console (its built `index.html`).
    #[utoipa::path(get, path = "/console/", tag = "console", responses(
        (status = 200, description = "The console's page", content_type = "text/html", body = String),
        (status = 503, description = "The console is not built; the page says how to build it", content_type = "text/html", body = String),
    ))]
    pub(crate) fn index() {}

    /// Exchanges the one-time login code of the URL `observastack up` prints for the session
    /// cookie (HttpOnly, SameSite=Strict, 12 h) and goes on to the console.
    #[utoipa::path(get, path = "/console/login", tag = "console",
        params(("code" = Option<String>, Query, description = "The one-time login code")),
        responses(
            (status = 303, description = "Signed in (the cookie set), or already signed in: to `/console/`", headers(("Location" = String))),
            (status = 400, description = "No `code`", content_type = "text/html", body = String),
            (status = 401, description = "The code is not valid for this stack, has expired or was used already", content_type = "text/html", body = String),
            (status = 503, description = "The login could not be recorded; try again", content_type = "text/html", body = String),
        ))]
    pub(crate) fn login() {}

    /// Forgets the session cookie.
    #[utoipa::path(post, path = "/console/logout", tag = "console", responses(
        (status = 204, description = "The cookie is cleared"),
    ))]
    pub(crate) fn logout() {}

    /// Which optional tools (Grafana, the Service Health view) the console links to.
    #[utoipa::path(get, path = "/console/settings.json", tag = "console", responses(
        (status = 200, body = PublicSettings),
    ))]
    pub(crate) fn settings() {}

    /// A file of the built console.
    #[utoipa::path(get, path = "/console/{path}", tag = "console",
        params(("path" = String, Path, description = "Below `/console/`, e.g. `assets/index-1a2b.js`")),
        responses(
            (status = 200, description = "The file, with its content type", content_type = "*/*", body = String),
            (status = 404, description = "No such file", body = ErrorBody),
            (status = 503, description = "The console is not built", content_type = "text/html", body = String),
        ))]
    pub(crate) fn asset() {}
}
