//! JWT guard shared by every service: EdDSA (Ed25519) tokens with an audience, an issuer, a role
//! and the id (`kid`) of the key that signed them. Only where tokens are minted (the
//! orchestrator, the `observastack` CLI) holds a private key ([`JwtSigner`]); every service
//! verifies with the stack's public keys ([`JwtKeys`]), so a compromised service cannot mint.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const AUDIENCE: &str = "observastack";
pub const ISSUER: &str = "observastack";
/// Cookie the console keeps the token in (HttpOnly; set by the control gateway's login route).
pub const TOKEN_COOKIE: &str = "observastack_token";

/// Env key of the verification keys every service gets: a path, inline PEM, or `base64:` and
/// the PEM text base64-encoded (one line, for `.env` files). See [`JwtKeys::from_pem`].
pub const ENV_JWT_PUBLIC_KEYS: &str = "OBSERVASTACK_JWT_PUBLIC_KEYS";
/// Env key of the PKCS#8 private key (same forms), given only where tokens are minted.
pub const ENV_JWT_PRIVATE_KEY: &str = "OBSERVASTACK_JWT_PRIVATE_KEY";
/// Prefix of a key given as base64 of its PEM text.
pub const BASE64_PREFIX: &str = "base64:";

const PUBLIC_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PUBLIC_END: &str = "-----END PUBLIC KEY-----";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Operates the system: may read everything and change operational knobs.
    Learner,
    /// Runs scenarios (the orchestrator): may also change fault-only fields.
    Instructor,
    /// A fact emitter: may send facts to the lake's ingest and nothing else.
    Service,
}

impl Role {
    /// Whether this role carries the rights of `needed`. Spelled out instead of ordered: a
    /// service is neither above nor below a learner, it is apart.
    pub fn includes(self, needed: Role) -> bool {
        matches!(
            (self, needed),
            (Role::Learner, Role::Learner)
                | (Role::Instructor, Role::Learner | Role::Instructor)
                | (Role::Service, Role::Service)
        )
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Learner => "learner",
            Role::Instructor => "instructor",
            Role::Service => "service",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "learner" => Ok(Role::Learner),
            "instructor" => Ok(Role::Instructor),
            "service" => Ok(Role::Service),
            other => Err(format!("unknown role `{other}`, expected `learner`, `instructor` or `service`")),
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
/// [`require_token`] and [`require_service_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
}

impl Caller {
    pub fn may(&self, needed: Role) -> bool {
        self.role.includes(needed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the `base64:` key is not base64 of PEM text")]
    Base64,
    #[error("public key {index} is not an Ed25519 public key in PEM (SPKI): {why}")]
    PublicKey { index: usize, why: String },
    #[error("no Ed25519 public key (`{PUBLIC_BEGIN}` … `{PUBLIC_END}`) found")]
    NoPublicKey,
    #[error("no public key to verify the stack's tokens with ({ENV_JWT_PUBLIC_KEYS} is empty)")]
    NoKeys,
    #[error("the public keys hold a private key; give services the public keys only")]
    PrivateAmongPublic,
    #[error("public key {index}: `# kid: {stated}` does not match the key, whose id is `{actual}`")]
    KidMismatch { index: usize, stated: String, actual: String },
    #[error("public key {index}: `# not-after: {value}` is not an RFC 3339 time (e.g. 2030-01-31T12:00:00Z)")]
    NotAfter { index: usize, value: String },
    #[error("public key {index}: `# {line}` has nothing to apply to")]
    Dangling { index: usize, line: String },
    #[error("the key `{0}` is listed twice")]
    DuplicateKid(String),
    #[error("not an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`)")]
    PrivateKey,
    #[error("no randomness for a new key: {0}")]
    Random(String),
    #[error("could not sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Why a token was refused. Each names its cause; none echoes the token or its `kid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token audience is not `{0}`")]
    Audience(String),
    #[error("token issuer is not `{ISSUER}`")]
    Issuer,
    #[error("token signature is invalid")]
    Signature,
    #[error("token algorithm must be EdDSA")]
    Algorithm,
    #[error("token header names no key (`kid`)")]
    NoKeyId,
    #[error("token key (`kid`) is not one this stack trusts")]
    UnknownKey,
    #[error("token key `{kid}` was retired at {at}")]
    RetiredKey { kid: String, at: String },
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        ApiError::Unauthorized(rejection.to_string())
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `kid` of a public key: the first 16 hex digits of SHA-256 over its SPKI DER, the same as
/// `openssl pkey -pubin -outform DER | sha256sum | cut -c1-16`.
fn key_id(key: &VerifyingKey) -> String {
    let der = key.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
    Sha256::digest(&der).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A key's text from an env value or flag: inline PEM, `base64:` + the PEM text base64-encoded
/// (one line, as `.env` files and Secret Manager keep it), or else a path to a file.
pub fn read_key_source(value: &str) -> Result<String, KeyError> {
    let value = value.trim();
    if value.starts_with("-----BEGIN") || value.starts_with('#') {
        return Ok(value.to_owned());
    }
    if let Some(encoded) = value.strip_prefix(BASE64_PREFIX) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim().as_bytes())
            .map_err(|_| KeyError::Base64)?;
        return String::from_utf8(bytes).map_err(|_| KeyError::Base64);
    }
    std::fs::read_to_string(value).map_err(|source| KeyError::Read { path: value.to_owned(), source })
}

/// A public key the stack trusts: its id and, once retired, the moment it stops being accepted.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
    decoding: DecodingKey,
    not_after: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).field("not_after", &self.not_after).finish()
    }
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        Self { kid: key_id(&key), decoding: DecodingKey::from_ed_der(key.as_bytes()), key, not_after: None }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When tokens it signed stop being accepted; `None` while it is a current key.
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        self.not_after
    }

    /// This key, accepted until `at` and refused after (a rotation's cut-off).
    pub fn retired_at(mut self, at: DateTime<Utc>) -> Self {
        self.not_after = Some(at);
        self
    }

    /// The key in the public keys format: `# kid:`, `# not-after:` when retired, then PEM.
    pub fn to_pem(&self) -> String {
        let mut out = format!("# kid: {}\n", self.kid);
        if let Some(at) = self.not_after {
            out.push_str(&format!("# not-after: {}\n", at.to_rfc3339_opts(SecondsFormat::Secs, true)));
        }
        let pem = self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default();
        out.push_str(pem.trim_end());
        out.push('\n');
        out
    }
}

/// The verification side, held by every service: the stack's public keys, the current one and
/// any retired one still inside its cut-off.
#[derive(Clone)]
pub struct JwtKeys {
    keys: Vec<PublicKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

impl Default for JwtKeys {
    /// No key at all: every token is refused. Services refuse to start with it.
    fn default() -> Self {
        Self { keys: Vec::new(), validation: validation(AUDIENCE) }
    }
}

fn validation(audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    validation
}

impl JwtKeys {
    pub fn new(keys: Vec<PublicKey>) -> Result<Self, KeyError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        Ok(Self { keys, ..Self::default() })
    }

    /// Parses the public keys format: one or more SPKI PEM blocks, each optionally preceded by
    /// `# kid: <id>` (checked against the key) and `# not-after: <RFC 3339>` (its cut-off).
    /// Other `#` lines and blank lines are comments.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateAmongPublic);
        }
        let mut keys = Vec::new();
        let (mut stated_kid, mut not_after): (Option<String>, Option<DateTime<Utc>>) = (None, None);
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            let index = keys.len() + 1;
            if let Some(comment) = line.strip_prefix('#') {
                let (name, value) = comment.split_once(':').unwrap_or((comment, ""));
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "kid" => stated_kid = Some(value.to_owned()),
                    "not-after" => {
                        let at = DateTime::parse_from_rfc3339(value)
                            .map_err(|_| KeyError::NotAfter { index, value: value.to_owned() })?;
                        not_after = Some(at.with_timezone(&Utc));
                    }
                    _ => {}
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if line != PUBLIC_BEGIN {
                return Err(KeyError::PublicKey { index, why: format!("unexpected line `{}`", clip(line)) });
            }
            let mut pem = format!("{PUBLIC_BEGIN}\n");
            loop {
                match lines.next() {
                    Some(PUBLIC_END) => break,
                    Some(body) => {
                        pem.push_str(body);
                        pem.push('\n');
                    }
                    None => return Err(KeyError::PublicKey { index, why: format!("no `{PUBLIC_END}`") }),
                }
            }
            pem.push_str(PUBLIC_END);
            pem.push('\n');
            let key = VerifyingKey::from_public_key_pem(&pem)
                .map_err(|err| KeyError::PublicKey { index, why: err.to_string() })?;
            let mut key = PublicKey::new(key);
            if let Some(stated) = stated_kid.take()
                && stated != key.kid
            {
                return Err(KeyError::KidMismatch { index, stated, actual: key.kid });
            }
            key.not_after = not_after.take();
            keys.push(key);
        }
        if let Some(kid) = stated_kid {
            return Err(KeyError::Dangling { index: keys.len() + 1, line: format!("kid: {kid}") });
        }
        if not_after.is_some() {
            return Err(KeyError::Dangling { index: keys.len() + 1, line: "not-after: …".to_owned() });
        }
        if keys.is_empty() {
            return Err(KeyError::NoPublicKey);
        }
        Self::new(keys)
    }

    /// The keys from an env value: a path, inline PEM or `base64:` text ([`read_key_source`]).
    pub fn from_source(value: &str) -> Result<Self, KeyError> {
        Self::from_pem(&read_key_source(value)?)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// These keys, refused when there are none: a service that verifies tokens with no key
    /// refuses every caller, so it must not start ([`JwtKeys::default`] is such a set).
    pub fn require_some(&self) -> Result<&Self, KeyError> {
        if self.keys.is_empty() { Err(KeyError::NoKeys) } else { Ok(self) }
    }

    /// The keys in the format [`JwtKeys::from_pem`] reads.
    pub fn to_pem(&self) -> String {
        self.keys.iter().map(PublicKey::to_pem).collect::<Vec<_>>().join("\n")
    }

    /// Verifies an API token (audience `observastack`) and says who calls, whatever the role.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let claims: Claims = self.decode_with(token, &self.validation)?;
        Ok(Caller { subject: claims.sub, role: claims.role })
    }

    /// Verifies a token of another audience (the console's login codes) into its claims.
    pub fn decode<T: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, Rejection> {
        self.decode_with(token, &validation(audience))
    }

    fn decode_with<T: DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<T, Rejection> {
        // The header picks the key, so it is checked before anything else: only EdDSA, only a
        // `kid` of ours, only before that key's cut-off. Neither a symmetric algorithm (the
        // public key as an HMAC secret) nor `none` gets as far as a key.
        let header = jsonwebtoken::decode_header(token).map_err(|err| rejection(&err, validation))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Rejection::Algorithm);
        }
        let kid = header.kid.ok_or(Rejection::NoKeyId)?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or(Rejection::UnknownKey)?;
        if let Some(at) = key.not_after
            && Utc::now() > at
        {
            return Err(Rejection::RetiredKey {
                kid: key.kid.clone(),
                at: at.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
        }
        jsonwebtoken::decode::<T>(token, &key.decoding, validation)
            .map(|data| data.claims)
            .map_err(|err| rejection(&err, validation))
    }
}

fn rejection(err: &jsonwebtoken::errors::Error, validation: &Validation) -> Rejection {
    match err.kind() {
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidAudience => Rejection::Audience(
            validation.aud.as_ref().and_then(|a| a.iter().next().cloned()).unwrap_or_else(|| AUDIENCE.to_owned()),
        ),
        ErrorKind::InvalidIssuer => Rejection::Issuer,
        ErrorKind::InvalidSignature => Rejection::Signature,
        ErrorKind::InvalidAlgorithm => Rejection::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => Rejection::MissingClaim(claim.clone()),
        // A header or claims set not of the stack's shape (`alg: none`, a missing or unknown
        // field); serde names which.
        ErrorKind::Json(json) => Rejection::Malformed(json.to_string()),
        _ => Rejection::Malformed("not a signed JWT".to_owned()),
    }
}

fn clip(line: &str) -> String {
    line.chars().take(40).collect()
}

/// The minting side: an Ed25519 private key and its `kid`. Only the orchestrator and the
/// `observastack` CLI hold one.
pub struct JwtSigner {
    key: SigningKey,
    encoding: EncodingKey,
    public: PublicKey,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtSigner({})", self.public.kid)
    }
}

impl JwtSigner {
    fn from_key(key: SigningKey) -> Result<Self, KeyError> {
        let der = key.to_pkcs8_der().map_err(|_| KeyError::PrivateKey)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = PublicKey::new(key.verifying_key());
        Ok(Self { key, encoding, public })
    }

    /// A fresh key pair from the OS's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Self::from_key(key)
    }

    /// Reads a PKCS#8 PEM private key (what `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        Self::from_key(SigningKey::from_pkcs8_pem(text.trim()).map_err(|_| KeyError::PrivateKey)?)
    }

    /// The key from an env value: a path, inline PEM or `base64:` text ([`read_key_source`]).
    pub fn from_source(value: &str) -> Result<Self, KeyError> {
        Self::from_pem(&read_key_source(value)?)
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, for the public keys every service gets.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// A key set of this key alone: what the services verify with when nothing was rotated.
    pub fn verifier(&self) -> JwtKeys {
        JwtKeys { keys: vec![self.public.clone()], ..JwtKeys::default() }
    }

    /// The private key as PKCS#8 PEM, in OpenSSL's form (no embedded public key); zeroed on
    /// drop.
    pub fn private_key_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        KeypairBytes { secret_key: self.key.to_bytes(), public_key: None }
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::PrivateKey)
    }

    /// Mints a token for `subject` with `role`, valid from now for `ttl`.
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, KeyError> {
        let now = now_secs();
        self.sign_claims(&Claims {
            sub: subject.to_owned(),
            role,
            aud: AUDIENCE.to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
        })
    }

    /// Signs arbitrary claims under this key's `kid` (login codes; tests that need expired or
    /// foreign tokens).
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// The verification keys named by [`ENV_JWT_PUBLIC_KEYS`]; `value` is its value (`main` reads
/// the environment). A missing or unusable value is an error that says what to do.
pub fn public_keys_from_env(value: Option<&str>) -> anyhow::Result<JwtKeys> {
    let value = value.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
        anyhow::anyhow!(
            "{ENV_JWT_PUBLIC_KEYS} is not set: services verify the stack's tokens with its public keys \
             (`observastack up` and `scripts/compose-env.sh` create them)"
        )
    })?;
    JwtKeys::from_source(value).map_err(|err| anyhow::anyhow!("{ENV_JWT_PUBLIC_KEYS} is unusable: {err}"))
}

/// The private key named by [`ENV_JWT_PRIVATE_KEY`], where tokens are minted.
pub fn signer_from_env(value: Option<&str>) -> anyhow::Result<JwtSigner> {
    let value = value.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
        anyhow::anyhow!(
            "{ENV_JWT_PRIVATE_KEY} is not set: this service mints tokens and needs the stack's private key \
             (`observastack up` and `scripts/compose-env.sh` create it)"
        )
    })?;
    JwtSigner::from_source(value).map_err(|err| anyhow::anyhow!("{ENV_JWT_PRIVATE_KEY} is unusable: {err}"))
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

fn caller_of(keys: &JwtKeys, req: &Request) -> Result<Caller, ApiError> {
    let token = token_from_headers(req.headers())
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token (Authorization: Bearer <jwt>)".to_owned()))?;
    keys.verify(token)
}

/// Middleware: a valid learner or instructor token passes, and its [`Caller`] is put in the
/// request extensions; a `service` token is a 403 (it may only send facts). Finer role checks
/// happen where the decision is made (e.g. per changed config field).
pub async fn require_token(
    State(keys): State<Arc<JwtKeys>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = caller_of(&keys, &req)?;
    if !caller.may(Role::Learner) {
        return Err(ApiError::Forbidden {
            message: format!("a `{}` token may only send facts to the lake's ingest", caller.role),
            fields: Vec::new(),
        });
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Middleware for the lake's ingest: only a `service` token passes (403 for any other role).
pub async fn require_service_token(
    State(keys): State<Arc<JwtKeys>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = caller_of(&keys, &req)?;
    if !caller.may(Role::Service) {
        return Err(ApiError::Forbidden {
            message: format!("a `{}` token may not send facts; emitters use a `service` token", caller.role),
            fields: Vec::new(),
        });
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn claims(now: u64, role: Role) -> Claims {
        Claims { sub: "ada".into(), role, aud: AUDIENCE.into(), iss: ISSUER.into(), iat: now, nbf: now, exp: now + 60 }
    }

    fn refusal(keys: &JwtKeys, token: &str) -> String {
        match keys.verify(token) {
            Err(ApiError::Unauthorized(why)) => why,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn a_minted_token_round_trips_with_the_signers_kid() {
        let signer = JwtSigner::generate().unwrap();
        let token = signer.mint("ada", Role::Learner, Duration::from_secs(60)).unwrap();
        assert_eq!(signer.verifier().verify(&token).unwrap(), Caller { subject: "ada".into(), role: Role::Learner });
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::EdDSA, Some(signer.kid())));
        assert_eq!(signer.kid().len(), 16);
    }

    #[test]
    fn the_kid_is_sha256_of_the_spki_der_as_openssl_computes_it() {
        // `openssl pkey -pubin -outform DER | sha256sum | cut -c1-16` over this key.
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAXyTFfydoPN2JqcM8D4MBY72CBBC4rIyP/NAPQunaTls=\n-----END PUBLIC KEY-----\n";
        let keys = JwtKeys::from_pem(pem).unwrap();
        assert_eq!(keys.keys()[0].kid(), "d2fbcd2468d38704");
    }

    #[test]
    fn private_and_public_keys_survive_their_pem_forms() {
        let signer = JwtSigner::generate().unwrap();
        let again = JwtSigner::from_pem(&signer.private_key_pem().unwrap()).unwrap();
        assert_eq!(again.kid(), signer.kid());
        let keys = JwtKeys::from_pem(&signer.verifier().to_pem()).unwrap();
        let token = again.mint("ada", Role::Instructor, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().role, Role::Instructor);
        let b64 = format!("{BASE64_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(keys.to_pem()));
        assert_eq!(JwtKeys::from_source(&b64).unwrap().keys()[0].kid(), signer.kid());
    }

    #[test]
    fn public_keys_refuse_a_private_key_a_wrong_kid_and_a_bad_cut_off() {
        let signer = JwtSigner::generate().unwrap();
        let private = signer.private_key_pem().unwrap();
        assert!(matches!(JwtKeys::from_pem(&private), Err(KeyError::PrivateAmongPublic)));
        let public = signer.verifier().to_pem();
        let wrong = public.replace(signer.kid(), "0000000000000000");
        assert!(matches!(JwtKeys::from_pem(&wrong), Err(KeyError::KidMismatch { .. })));
        let late = format!("# not-after: next tuesday\n{public}");
        assert!(matches!(JwtKeys::from_pem(&late), Err(KeyError::NotAfter { .. })));
        assert!(matches!(JwtKeys::from_pem(&format!("{public}\n{public}")), Err(KeyError::DuplicateKid(_))));
        assert!(matches!(JwtKeys::from_pem("# nothing here\n"), Err(KeyError::NoPublicKey)));
        assert!(matches!(JwtSigner::from_pem(&public), Err(KeyError::PrivateKey)));
    }

    #[test]
    fn a_token_signed_with_any_other_key_is_unauthorized() {
        let stack = JwtSigner::generate().unwrap();
        let keys = stack.verifier();
        let other = JwtSigner::generate().unwrap();
        let forged = other.mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
        assert_eq!(refusal(&keys, &forged), "token key (`kid`) is not one this stack trusts");

        // Another key claiming the stack's kid.
        let now = now_secs();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(stack.kid().to_owned());
        let claiming = jsonwebtoken::encode(&header, &claims(now, Role::Instructor), &other.encoding).unwrap();
        assert_eq!(refusal(&keys, &claiming), "token signature is invalid");

        // No kid at all.
        let bare =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(now, Role::Instructor), &stack.encoding)
                .unwrap();
        assert_eq!(refusal(&keys, &bare), "token header names no key (`kid`)");
    }

    #[test]
    fn the_public_key_as_an_hmac_secret_is_unauthorized() {
        let stack = JwtSigner::generate().unwrap();
        let keys = stack.verifier();
        let now = now_secs();
        let pem = stack.public.key.to_public_key_pem(LineEnding::LF).unwrap();
        let der = stack.public.key.to_public_key_der().unwrap();
        let file = keys.to_pem();
        let secrets: [&[u8]; 4] = [stack.public.key.as_bytes(), der.as_bytes(), pem.as_bytes(), file.as_bytes()];
        for secret in secrets {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let mut header = Header::new(alg);
                header.kid = Some(stack.kid().to_owned());
                let token =
                    jsonwebtoken::encode(&header, &claims(now, Role::Instructor), &EncodingKey::from_secret(secret))
                        .unwrap();
                assert_eq!(refusal(&keys, &token), "token algorithm must be EdDSA", "{alg:?}");
            }
        }
    }

    #[test]
    fn alg_none_expired_and_foreign_audience_tokens_are_unauthorized() {
        let stack = JwtSigner::generate().unwrap();
        let keys = stack.verifier();
        let now = now_secs();
        let payload = encode(&serde_json::to_vec(&claims(now, Role::Instructor)).unwrap());
        for header in
            [format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, stack.kid()), r#"{"alg":"none"}"#.to_owned()]
        {
            assert!(refusal(&keys, &format!("{}.{payload}.", encode(header.as_bytes()))).contains("malformed"));
        }
        let expired = stack
            .sign_claims(&Claims { iat: now - 7200, nbf: now - 7200, exp: now - 3600, ..claims(now, Role::Learner) })
            .unwrap();
        assert_eq!(refusal(&keys, &expired), "token expired");
        let wrong_aud =
            stack.sign_claims(&Claims { aud: "someone-else".into(), ..claims(now, Role::Learner) }).unwrap();
        assert!(refusal(&keys, &wrong_aud).contains("audience"));
        let unknown_role = stack
            .sign_claims(&serde_json::json!({"sub": "eve", "role": "admin", "aud": AUDIENCE, "iss": ISSUER,
                                                   "iat": now, "nbf": now, "exp": now + 60}))
            .unwrap();
        assert!(refusal(&keys, &unknown_role).contains("unknown variant `admin`"));
    }

    #[test]
    fn a_retired_key_is_accepted_until_its_cut_off_and_refused_after() {
        let old = JwtSigner::generate().unwrap();
        let new = JwtSigner::generate().unwrap();
        let token = old.mint("ada", Role::Learner, Duration::from_secs(3600)).unwrap();
        let in_an_hour = Utc::now() + chrono::Duration::hours(1);
        let rotated = JwtKeys::new(vec![new.public_key(), old.public_key().retired_at(in_an_hour)]).unwrap();
        // Through the file format, as services read it.
        let rotated = JwtKeys::from_pem(&rotated.to_pem()).unwrap();
        assert_eq!(rotated.verify(&token).unwrap().subject, "ada");
        assert!(rotated.verify(&new.mint("bo", Role::Learner, Duration::from_secs(60)).unwrap()).is_ok());

        let a_second_ago = Utc::now() - chrono::Duration::seconds(1);
        let cut = JwtKeys::new(vec![new.public_key(), old.public_key().retired_at(a_second_ago)]).unwrap();
        assert!(refusal(&cut, &token).starts_with(&format!("token key `{}` was retired at ", old.kid())));
        let dropped = new.verifier();
        assert_eq!(refusal(&dropped, &token), "token key (`kid`) is not one this stack trusts");
    }

    #[test]
    fn a_service_token_has_the_rights_of_a_service_only() {
        let service = Caller { subject: "shop".into(), role: Role::Service };
        assert!(service.may(Role::Service));
        assert!(!service.may(Role::Learner) && !service.may(Role::Instructor));
        let instructor = Caller { subject: "o".into(), role: Role::Instructor };
        assert!(instructor.may(Role::Learner) && instructor.may(Role::Instructor) && !instructor.may(Role::Service));
        let learner = Caller { subject: "l".into(), role: Role::Learner };
        assert!(learner.may(Role::Learner) && !learner.may(Role::Instructor) && !learner.may(Role::Service));
        assert_eq!("service".parse::<Role>(), Ok(Role::Service));
    }

    #[test]
    fn missing_or_unusable_env_values_say_what_to_do() {
        let missing = public_keys_from_env(None).unwrap_err().to_string();
        assert!(missing.contains(ENV_JWT_PUBLIC_KEYS) && missing.contains("observastack up"), "{missing}");
        let unreadable = public_keys_from_env(Some("/nonexistent/keys.pem")).unwrap_err().to_string();
        assert!(unreadable.contains("/nonexistent/keys.pem"), "{unreadable}");
        let missing = signer_from_env(Some("  ")).unwrap_err().to_string();
        assert!(missing.contains(ENV_JWT_PRIVATE_KEY), "{missing}");
        let signer = JwtSigner::generate().unwrap();
        let inline = signer_from_env(Some(&signer.private_key_pem().unwrap())).unwrap();
        assert_eq!(inline.kid(), signer.kid());
        let garbled = public_keys_from_env(Some("-----BEGIN PUBLIC KEY-----\nxx")).unwrap_err().to_string();
        assert!(garbled.contains("unusable"), "{garbled}");
        // A private key where the public ones belong is refused, not quietly used.
        let leaked = public_keys_from_env(Some(&signer.private_key_pem().unwrap())).unwrap_err().to_string();
        assert!(leaked.contains("public keys only"), "{leaked}");
    }

    #[test]
    fn an_empty_key_set_is_refused_naming_the_env_key() {
        let none = JwtKeys::default().require_some().unwrap_err().to_string();
        assert!(none.starts_with("no public key") && none.contains(ENV_JWT_PUBLIC_KEYS), "{none}");
        let keys = JwtSigner::generate().unwrap().verifier();
        assert_eq!(keys.require_some().unwrap().keys().len(), 1);
    }
}
