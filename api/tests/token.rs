//! `api token` and the key configurations: tokens it prints verify, public-key
//! algorithms refuse HS256 tokens signed with the public key (algorithm
//! confusion), and the API will not start without a key.

use std::path::Path;
use std::process::{Command, Output};

use api::auth::{Authenticator, Scope};
use api::config::{AuthArgs, Cli};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET: &str = "a secret for tests, thirty-two bytes at least";

fn api(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.args(args).env_remove("JWT_SECRET").env("REDIS_URL", "redis://127.0.0.1:1");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("api runs")
}

fn auth_args(args: &[&str]) -> AuthArgs {
    let mut argv = vec!["api"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse").config.auth
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl").args(args).status().expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A key pair written by openssl: (private PEM path, public PEM path).
fn key_pair(dir: &Path, algorithm: &str) -> (String, String) {
    let private = dir.join(format!("{algorithm}.pem")).display().to_string();
    let public = dir.join(format!("{algorithm}.pub.pem")).display().to_string();
    match algorithm {
        "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", &private]),
        _ => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &private]),
    }
    openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    (private, public)
}

#[test]
fn a_printed_token_carries_its_tenant_and_scopes() {
    let output = api(
        &["token", "--tenant", "acme", "--scope", "jobs:write jobs:read", "--ttl", "1h"],
        &[("JWT_SECRET", SECRET)],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let verifier = Authenticator::from_config(&auth_args(&["--jwt-secret", SECRET])).unwrap();
    let principal = verifier.verify(token.trim()).expect("the printed token verifies");
    assert_eq!(principal.tenant, "acme");
    assert_eq!(principal.scopes(), vec![Scope::JobsWrite, Scope::JobsRead]);
    let ttl = principal.expires_at - jsonwebtoken::get_current_timestamp();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
}

#[test]
fn without_a_key_neither_tokens_nor_the_api_start() {
    for args in [&["token", "--tenant", "acme"][..], &[]] {
        let output = api(args, &[]);
        assert!(!output.status.success(), "{args:?} ran without a key");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("JWT_SECRET"), "{args:?}: {stderr}");
    }
    let output = api(&["token", "--tenant", "acme"], &[("JWT_SECRET", "short")]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 32 bytes"));
    let output = api(&["token", "--tenant", "acme", "--scope", "everything"], &[("JWT_SECRET", SECRET)]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scope"));
}

#[test]
fn public_key_algorithms_verify_their_tokens_and_refuse_confused_ones() {
    let dir = tempfile::tempdir().unwrap();
    for (algorithm, name) in [("ed25519", "EdDSA"), ("rsa", "RS256")] {
        let (private, public) = key_pair(dir.path(), algorithm);
        let output = api(
            &["token", "--tenant", "acme", "--scope", "admin", "--private-key-file", &private],
            &[("JWT_ALGORITHM", name)],
        );
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let token = String::from_utf8(output.stdout).unwrap();
        let verifier =
            Authenticator::from_config(&auth_args(&["--jwt-algorithm", name, "--jwt-public-key-file", &public]))
                .unwrap();
        assert!(verifier.verify(token.trim()).unwrap().has(Scope::Admin), "{name}");

        // HS256 signed with the public key, which an attacker can read.
        let claims = serde_json::json!({"sub": "x", "tenant": "acme", "scope": "admin", "exp": 4_000_000_000u64});
        let pem = std::fs::read(&public).unwrap();
        let confused =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&pem)).unwrap();
        assert!(verifier.verify(&confused).is_err(), "{name} accepted an HS256 token");
        // A token of the other key pair fails too.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        let (other_private, _) = key_pair(&other, algorithm);
        let output =
            api(&["token", "--tenant", "acme", "--private-key-file", &other_private], &[("JWT_ALGORITHM", name)]);
        let foreign = String::from_utf8(output.stdout).unwrap();
        assert!(verifier.verify(foreign.trim()).is_err(), "{name} accepted another key's token");
    }
}
