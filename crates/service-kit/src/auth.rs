//! JWT guard shared by every service: HS256 tokens with an audience, an issuer and a role.
//! The signing secret comes from the stack (see `observastack up`); there is no default.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const AUDIENCE: &str = "observastack";
pub const ISSUER: &str = "observastack";
/// Cookie the console keeps the token in (HttpOnly; set by the control gateway's login route).
pub const TOKEN_COOKIE: &str = "observastack_token";
/// Shortest secret accepted: HS256 wants at least the hash size in key material.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Operates the system: may read everything and change operational knobs.
    Learner,
    /// Runs scenarios (the orchestrator): may also change fault-only fields.
    Instructor,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Learner => "learner",
            Role::Instructor => "instructor",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "learner" => Ok(Role::Learner),
            "instructor" => Ok(Role::Instructor),
            other => Err(format!("unknown role `{other}`, expected `learner` or `instructor`")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// Who is calling, as proven by a verified token. Inserted into request extensions by
/// [`require_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
}

impl Caller {
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

/// Signing and verification keys for the stack's HS256 tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("JWT secret must be at least {MIN_SECRET_BYTES} bytes (got {0}); `observastack up` generates one")]
    TooShort(usize),
    #[error("could not sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl JwtKeys {
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation })
    }

    /// Mints a token for `subject` with `role`, valid from now for `ttl`.
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, KeyError> {
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            aud: AUDIENCE.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// Signs arbitrary claims; for tests that need expired or foreign tokens.
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(Caller { subject: data.claims.sub, role: data.claims.role }),
            Err(err) => {
                let why = match err.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
                    ErrorKind::InvalidAudience => "token audience is not `observastack`".to_owned(),
                    ErrorKind::InvalidIssuer => "token issuer is not `observastack`".to_owned(),
                    ErrorKind::InvalidSignature => "token signature is invalid".to_owned(),
                    ErrorKind::InvalidAlgorithm => "token algorithm must be HS256".to_owned(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the required claim `{claim}`"),
                    // A header or claims set not of the stack's shape (`alg: none`, a missing
                    // or unknown field); serde names which.
                    ErrorKind::Json(json) => format!("token is malformed: {json}"),
                    _ => "token is malformed".to_owned(),
                };
                Err(ApiError::Unauthorized(why))
            }
        }
    }
}

/// Extracts the bearer token from `Authorization` or the console cookie. Query strings are
/// never consulted: they end up in logs and browser history.
pub fn token_from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value)
}

/// Middleware: any valid token passes, and its [`Caller`] is put in the request extensions.
/// Role checks happen where the decision is made (e.g. per changed config field).
pub async fn require_token(
    State(keys): State<Arc<JwtKeys>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = token_from_headers(req.headers())
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token (Authorization: Bearer <jwt>)".to_owned()))?;
    let caller = keys.verify(token)?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn short_secret_is_refused() {
        assert!(matches!(JwtKeys::from_secret(b"short"), Err(KeyError::TooShort(5))));
    }

    #[test]
    fn minted_token_round_trips() {
        let keys = JwtKeys::from_secret(SECRET).unwrap();
        let token = keys.mint("ada", Role::Learner, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), Caller { subject: "ada".into(), role: Role::Learner });
    }

    #[test]
    fn forged_tokens_are_unauthorized() {
        let keys = JwtKeys::from_secret(SECRET).unwrap();
        let other = JwtKeys::from_secret(b"ffffffffffffffffffffffffffffffff").unwrap();
        let forged = other.mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
        assert!(matches!(keys.verify(&forged), Err(ApiError::Unauthorized(m)) if m.contains("signature")));

        // alg: none with a plausible payload and an empty signature.
        use base64::Engine as _;
        let encode = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
        let now = now_secs();
        let payload = encode(
            format!(r#"{{"sub":"eve","role":"instructor","aud":"observastack","iss":"observastack","iat":{now},"nbf":{now},"exp":{}}}"#, now + 60)
                .as_bytes(),
        );
        assert!(matches!(keys.verify(&format!("{header}.{payload}.")), Err(ApiError::Unauthorized(_))));

        let expired = keys
            .sign_claims(&Claims {
                sub: "ada".into(),
                role: Role::Learner,
                aud: AUDIENCE.into(),
                iss: ISSUER.into(),
                iat: now - 7200,
                nbf: now - 7200,
                exp: now - 3600,
            })
            .unwrap();
        assert!(matches!(keys.verify(&expired), Err(ApiError::Unauthorized(m)) if m == "token expired"));

        let wrong_aud = keys
            .sign_claims(&Claims {
                sub: "ada".into(),
                role: Role::Learner,
                aud: "someone-else".into(),
                iss: ISSUER.into(),
                iat: now,
                nbf: now,
                exp: now + 60,
            })
            .unwrap();
        assert!(matches!(keys.verify(&wrong_aud), Err(ApiError::Unauthorized(m)) if m.contains("audience")));
    }
}
