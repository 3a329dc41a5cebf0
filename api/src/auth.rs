//! Who is calling: a JWT bearer token, verified with the one key and the one
//! algorithm the configuration names.
//!
//! Tokens carry `sub`, `tenant`, `scope` (space-separated `jobs:write`,
//! `jobs:read`, `email:send`, `admin`) and `exp`. The algorithm is never taken from the token:
//! `alg: none`, another algorithm, or a key named in the token header (`jwk`,
//! `jku`, `x5u`, `x5c`) are refused like a bad signature.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::config::{AuthArgs, JwtAlgorithm};
use crate::error::ApiError;

/// The shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token allows. `admin` includes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Submit, cancel and retry jobs.
    JobsWrite,
    /// Read jobs, queues and events.
    JobsRead,
    /// Submit `email.send` jobs (with `jobs:write`): mail leaves the deployment
    /// in the operator's name, so it is granted apart.
    EmailSend,
    /// Everything, plus queue-wide operations (retrying a queue's failed jobs) and
    /// the worker list.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::JobsWrite, Scope::JobsRead, Scope::EmailSend, Scope::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::JobsWrite => "jobs:write",
            Self::JobsRead => "jobs:read",
            Self::EmailSend => "email:send",
            Self::Admin => "admin",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::JobsWrite => 1,
            Self::JobsRead => 2,
            Self::Admin => 4,
            Self::EmailSend => 8,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims this service reads and mints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub scope: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience or several (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// `aud`: a string or an array of strings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub tenant: String,
    scopes: u8,
    /// An `admin` token of `ADMIN_TENANT`: sees every tenant's queues and the workers.
    operator: bool,
    /// When the token expires, in Unix seconds.
    pub expires_at: u64,
}

impl Principal {
    /// Whether the token grants `scope` (directly or through `admin`).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Whether the caller operates the deployment (see [`Principal::require_operator`]).
    pub fn is_operator(&self) -> bool {
        self.operator
    }

    /// 403 `forbidden` unless the caller is an operator: an `admin` token of the
    /// tenant `ADMIN_TENANT`. Another tenant's `admin` is that tenant's only.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.operator {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs an `admin` token of the operators' tenant (ADMIN_TENANT)".into()))
        }
    }

    /// 403 `forbidden` unless the token grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) { Ok(()) } else { Err(ApiError::Forbidden(format!("this needs the `{scope}` scope"))) }
    }

    /// The token's scopes, as granted.
    pub fn scopes(&self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|scope| self.scopes & scope.bit() != 0).collect()
    }
}

/// Verifies tokens. Built once at start-up from the configuration.
pub struct Authenticator {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    /// Longest life a token may claim (`JWT_MAX_TTL_SECS`).
    max_ttl_secs: u64,
    /// The tenant whose `admin` tokens are operators (`ADMIN_TENANT`).
    admin_tenant: Option<String>,
}

impl Authenticator {
    /// Reads the key the configuration names; fails when none is configured, as
    /// every `/v1` route needs one.
    pub fn from_config(args: &AuthArgs) -> anyhow::Result<Self> {
        let (algorithm, key) = match args.jwt_algorithm {
            JwtAlgorithm::Hs256 => (Algorithm::HS256, DecodingKey::from_secret(hs256_secret(args)?)),
            JwtAlgorithm::EdDsa => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&public_key(args)?)?),
            JwtAlgorithm::Rs256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(&public_key(args)?)?),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = args.jwt_leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely unequal when present.
        let mut required = vec!["exp", "sub"];
        match &args.jwt_issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &args.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            algorithm,
            key,
            validation,
            max_ttl_secs: args.jwt_max_ttl_secs,
            admin_tenant: args.admin_tenant.clone(),
        })
    }

    /// Checks a token's header, signature and claims. `decode` refuses any
    /// algorithm but the configured one (an unknown one, `none` included, does
    /// not even parse) before it looks at the signature.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| ApiError::Unauthorized(self.describe(&err)))?;
        let header = &data.header;
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(ApiError::Unauthorized("keys named in the token header are not accepted".into()));
        }
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let lifetime = claims.exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime > self.max_ttl_secs {
            return Err(ApiError::Unauthorized(format!(
                "the token lives {lifetime} s; at most {} s are accepted (JWT_MAX_TTL_SECS)",
                self.max_ttl_secs
            )));
        }
        if !valid_tenant(&claims.tenant) {
            return Err(ApiError::Unauthorized("the token's `tenant` claim must be 1-64 of [A-Za-z0-9._-]".into()));
        }
        let mut scopes = 0;
        for word in claims.scope.split_whitespace() {
            if let Some(scope) = Scope::ALL.into_iter().find(|scope| scope.as_str() == word) {
                scopes |= scope.bit();
            }
        }
        let operator = scopes & Scope::Admin.bit() != 0 && self.admin_tenant.as_deref() == Some(claims.tenant.as_str());
        Ok(Principal { subject: claims.sub, tenant: claims.tenant, scopes, operator, expires_at: claims.exp })
    }

    /// Verifies the bearer token of an `Authorization` header value.
    pub fn verify_header(&self, value: Option<&str>) -> Result<Principal, ApiError> {
        let value = value.ok_or_else(|| ApiError::Unauthorized("send `Authorization: Bearer <token>`".into()))?;
        let token = value
            .split_once(' ')
            .filter(|(kind, _)| kind.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        self.verify(token)
    }
}

impl Authenticator {
    fn describe(&self, err: &jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match err.kind() {
            ErrorKind::ExpiredSignature => "the token has expired".into(),
            ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
            ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
            ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
            ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
            ErrorKind::InvalidAlgorithm => format!("tokens must be signed with {:?}", self.algorithm),
            _ => "the token is malformed or uses an unknown algorithm".into(),
        }
    }
}

/// Tenant names become parts of Redis keys: keep them plain.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len())
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn hs256_secret(args: &AuthArgs) -> anyhow::Result<&[u8]> {
    let Some(secret) = &args.jwt_secret else {
        bail!(
            "set JWT_SECRET (at least {MIN_SECRET_BYTES} bytes), or JWT_ALGORITHM=EdDSA|RS256 with JWT_PUBLIC_KEY_FILE"
        );
    };
    let secret = secret.expose_secret().as_bytes();
    if secret.len() < MIN_SECRET_BYTES {
        bail!("JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long");
    }
    Ok(secret)
}

fn public_key(args: &AuthArgs) -> anyhow::Result<Vec<u8>> {
    let path = args.jwt_public_key_file.as_ref().context("JWT_ALGORITHM=EdDSA or RS256 needs JWT_PUBLIC_KEY_FILE")?;
    read_pem(path, "JWT_PUBLIC_KEY_FILE")
}

fn read_pem(path: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {name}={}", path.display()))
}

/// What `api token` puts in a token.
pub struct TokenRequest<'a> {
    pub tenant: &'a str,
    pub subject: &'a str,
    pub scope: &'a str,
    pub ttl: Duration,
    /// PEM private key, for EdDSA and RS256.
    pub private_key_file: Option<&'a PathBuf>,
}

/// Signs a token with the configured algorithm (HS256 with JWT_SECRET; EdDSA or
/// RS256 with the private key file).
pub fn mint(args: &AuthArgs, request: &TokenRequest<'_>) -> anyhow::Result<String> {
    if !valid_tenant(request.tenant) {
        bail!("the tenant must be 1-64 of [A-Za-z0-9._-]");
    }
    for word in request.scope.split_whitespace() {
        if !Scope::ALL.iter().any(|scope| scope.as_str() == word) {
            bail!("unknown scope `{word}`: use jobs:write, jobs:read, email:send or admin");
        }
    }
    let private_key = || {
        let path = request.private_key_file.context("EdDSA and RS256 tokens need --private-key-file")?;
        read_pem(path, "--private-key-file")
    };
    let (algorithm, key) = match args.jwt_algorithm {
        JwtAlgorithm::Hs256 => (Algorithm::HS256, EncodingKey::from_secret(hs256_secret(args)?)),
        JwtAlgorithm::EdDsa => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&private_key()?)?),
        JwtAlgorithm::Rs256 => (Algorithm::RS256, EncodingKey::from_rsa_pem(&private_key()?)?),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: request.subject.to_owned(),
        tenant: request.tenant.to_owned(),
        scope: request.scope.split_whitespace().collect::<Vec<_>>().join(" "),
        exp: now + request.ttl.as_secs().max(1),
        iat: Some(now),
        iss: args.jwt_issuer.clone(),
        aud: args.jwt_audience.clone().map(Audience::One),
        nbf: None,
    };
    Ok(jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)?)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).map(|value| value.to_str().unwrap_or(""));
        state.auth.verify_header(header)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn args(secret: &str) -> AuthArgs {
        AuthArgs {
            jwt_secret: Some(SecretString::from(secret.to_owned())),
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 0,
            jwt_max_ttl_secs: 3600,
            admin_tenant: None,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(args: &AuthArgs, scope: &str) -> String {
        let request =
            TokenRequest { tenant: "acme", subject: "me", scope, ttl: Duration::from_secs(60), private_key_file: None };
        mint(args, &request).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_with_its_scopes() {
        let args = args(SECRET);
        let principal = Authenticator::from_config(&args).unwrap().verify(&token(&args, "jobs:read")).unwrap();
        assert_eq!((principal.tenant.as_str(), principal.subject.as_str()), ("acme", "me"));
        assert!(principal.has(Scope::JobsRead));
        assert!(!principal.has(Scope::JobsWrite));
        assert!(principal.require(Scope::JobsWrite).is_err());
    }

    #[test]
    fn admin_implies_the_other_scopes() {
        let args = args(SECRET);
        let principal = Authenticator::from_config(&args).unwrap().verify(&token(&args, "admin")).unwrap();
        assert!(Scope::ALL.into_iter().all(|scope| principal.has(scope)));
        assert_eq!(principal.scopes(), vec![Scope::Admin]);
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(Authenticator::from_config(&args("too short")).is_err());
        let mut none = args(SECRET);
        none.jwt_secret = None;
        assert!(Authenticator::from_config(&none).is_err());
    }

    #[test]
    fn another_key_or_a_tampered_payload_fails() {
        let ours = Authenticator::from_config(&args(SECRET)).unwrap();
        let theirs = token(&args("another secret of 32 bytes or more!"), "admin");
        assert!(ours.verify(&theirs).is_err());
        let genuine = token(&args(SECRET), "jobs:read");
        let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(ours.verify(&parts.join(".")).is_err());
    }

    #[test]
    fn unknown_scopes_and_bad_tenants_are_not_minted() {
        let args = args(SECRET);
        let bad_scope = TokenRequest {
            tenant: "acme",
            subject: "me",
            scope: "jobs:all",
            ttl: Duration::from_secs(1),
            private_key_file: None,
        };
        assert!(mint(&args, &bad_scope).is_err());
        let bad_tenant = TokenRequest { tenant: "a b", ..bad_scope };
        assert!(mint(&args, &bad_tenant).is_err());
    }
}
