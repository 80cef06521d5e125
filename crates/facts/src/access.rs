//! Who may call which lake route: a bearer token of an allowed role, checked before the body is
//! read, and (for ingest) a JSON content type, so a web page cannot post a "simple" cross-site
//! request without a CORS preflight.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use service_kit::{ApiError, Caller, JwtKeys, Role};

/// Roles one group of routes admits, and how a refusal names the group.
#[derive(Debug)]
pub struct Rule {
    pub allowed: &'static [Role],
    /// What the caller tried, after "may not".
    pub what: &'static str,
    /// Which token would do.
    pub hint: &'static str,
}

/// `POST /api/v1/facts`: the emitters' `service` token, or an instructor's (tests, replays).
pub const INGEST: Rule = Rule {
    allowed: &[Role::Service, Role::Instructor],
    what: "ingest facts",
    hint: "ingest takes a `service` token (emitters send OBSERVASTACK_SERVICE_TOKEN) or an instructor's",
};
/// `POST /api/v1/sql`: people, not emitters.
pub const SQL: Rule = Rule {
    allowed: &[Role::Learner, Role::Instructor],
    what: "run SQL on the lake",
    hint: "SQL takes a learner's or an instructor's token",
};
/// Flush, rollup and recompute: they rewrite what the dashboard shows.
pub const MAINTENANCE: Rule = Rule {
    allowed: &[Role::Instructor],
    what: "run the lake's flush, rollup or recompute",
    hint: "the lake's maintenance takes an instructor's token",
};

/// A [`Rule`] with the keys that verify tokens: the state of [`require`].
#[derive(Debug, Clone)]
pub struct Gate {
    keys: Arc<JwtKeys>,
    rule: &'static Rule,
}

impl Gate {
    pub fn new(keys: Arc<JwtKeys>, rule: &'static Rule) -> Self {
        Self { keys, rule }
    }

    /// The verified caller, if its role is admitted: 401 without a valid token, 403 otherwise.
    pub fn check(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer(headers).ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "missing bearer token (Authorization: Bearer <jwt>) to {}; {}",
                self.rule.what, self.rule.hint
            ))
        })?;
        let caller = self.keys.verify(token)?;
        if self.rule.allowed.contains(&caller.role) {
            Ok(caller)
        } else {
            Err(ApiError::Forbidden {
                message: format!("role `{}` may not {}: {}", caller.role, self.rule.what, self.rule.hint),
                fields: Vec::new(),
            })
        }
    }
}

/// The `Authorization: Bearer` token only. Unlike the other services, the lake ignores the
/// console's cookie: a cookie is an ambient credential a cross-site request would carry.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: [`Gate::check`], the caller put in the request extensions.
pub async fn require(State(gate): State<Gate>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let caller = gate.check(req.headers())?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Media types ingest parses: JSON (one fact or an array) and NDJSON.
const INGEST_TYPES: &[&str] = &["application/json", "application/x-ndjson"];

/// Middleware: 415 unless `Content-Type` is JSON or NDJSON (parameters allowed; a charset must
/// be UTF-8). `text/plain`, forms and a missing type are what a page may send cross-site
/// without a preflight, so they never reach the parser.
pub async fn require_json(req: Request, next: Next) -> Result<Response, ApiError> {
    if is_ingest_type(req.headers()) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "the Content-Type header must be `application/json` or `application/x-ndjson` (UTF-8); nothing was stored"
                .to_owned(),
        ))
    }
}

fn is_ingest_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    // Two Content-Type headers are ambiguous: refuse rather than pick one.
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !INGEST_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        // Other parameters change nothing about how the body is read.
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(name.clone(), HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}")));
        }
        headers
    }

    #[test]
    fn json_and_ndjson_with_parameters_are_ingest_types() {
        for ok in [
            "application/json",
            "application/x-ndjson",
            "Application/JSON; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/x-ndjson; charset=utf8; boundary=x",
        ] {
            assert!(is_ingest_type(&with(header::CONTENT_TYPE, &[ok])), "{ok}");
        }
    }

    #[test]
    fn text_forms_other_charsets_missing_and_doubled_types_are_not() {
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/jsonx",
            "application/problem+json",
            "",
        ] {
            assert!(!is_ingest_type(&with(header::CONTENT_TYPE, &[bad])), "{bad}");
        }
        assert!(!is_ingest_type(&HeaderMap::new()));
        assert!(!is_ingest_type(&with(header::CONTENT_TYPE, &["application/json", "text/plain"])));
    }

    #[test]
    fn only_an_authorization_bearer_token_counts() {
        assert_eq!(bearer(&with(header::AUTHORIZATION, &["Bearer abc"])), Some("abc"));
        assert_eq!(bearer(&with(header::AUTHORIZATION, &["bearer  abc "])), Some("abc"));
        assert_eq!(bearer(&with(header::AUTHORIZATION, &["Basic abc"])), None);
        assert_eq!(bearer(&with(header::AUTHORIZATION, &["Bearer "])), None);
        assert_eq!(bearer(&with(header::COOKIE, &["observastack_token=abc"])), None);
    }
}
