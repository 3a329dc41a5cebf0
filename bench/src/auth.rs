//! The bearer token the harness sends on every `/v1` request.
//!
//! The API is about to require an HS256 JWT signed with `JWT_SECRET`. The harness
//! sets that secret for the API it starts and asks `api token` for a token; an
//! `api` without that command gets one minted here with the same claims. An API
//! that does not check tokens yet ignores the header, so runs compare across both.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// Secret the harness gives its API (≥ 32 bytes, as the API requires).
pub const BENCH_JWT_SECRET: &str = "bench-harness-secret-0123456789abcdef";
pub const TENANT: &str = "default";
pub const SCOPE: &str = "jobs:write jobs:read email:send";

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    tenant: &'a str,
    scope: &'a str,
    exp: i64,
}

/// An HS256 token for `tenant` with `scope`, valid for `ttl`.
pub fn mint(secret: &str, tenant: &str, scope: &str, ttl: Duration) -> anyhow::Result<String> {
    let claims = Claims { sub: "bench", tenant, scope, exp: chrono::Utc::now().timestamp() + ttl.as_secs() as i64 };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).context("cannot sign the bench token")
}

/// The tenants a run's jobs are spread over: `default` alone, or `t0`, `t1`, …
pub fn tenants(count: usize) -> Vec<String> {
    if count <= 1 { vec![TENANT.to_owned()] } else { (0..count).map(|i| format!("t{i}")).collect() }
}

/// A token for each of `tenants`, minted here.
pub fn tokens(secret: &str, tenants: &[String]) -> anyhow::Result<Vec<String>> {
    tenants.iter().map(|tenant| mint(secret, tenant, SCOPE, Duration::from_secs(2 * 3600))).collect()
}

/// A token from `<bin-dir>/api token …` when the binary has that command,
/// otherwise one minted here.
pub fn token_for(api_binary: Option<&Path>, secret: &str) -> anyhow::Result<String> {
    if let Some(binary) = api_binary {
        let output = Command::new(binary)
            .args(["token", "--tenant", TENANT, "--scope", SCOPE, "--ttl", "2h"])
            .env("JWT_SECRET", secret)
            .env("RUST_LOG", "error")
            .output();
        if let Ok(output) = output
            && output.status.success()
            && let Ok(text) = String::from_utf8(output.stdout)
            && let Some(token) = text.split_whitespace().last()
        {
            return Ok(token.to_owned());
        }
    }
    mint(secret, TENANT, SCOPE, Duration::from_secs(2 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_is_a_three_part_hs256_jwt() {
        let token = mint(BENCH_JWT_SECRET, TENANT, SCOPE, Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        // {"typ":"JWT","alg":"HS256"} in base64url
        assert!(parts[0].starts_with("eyJ"), "{token}");
    }
}
