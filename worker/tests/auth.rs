//! Authentication, scopes, tenant isolation and the per-tenant rate limit, over
//! real HTTP against the real API: every token that should fail does, on every
//! route, and no tenant sees or touches another's jobs.

mod support;

use std::time::Duration;

use api::auth::{Audience, Claims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{System, TENANT, TEST_SECRET, client_for, token};

/// Every `/v1` route, with a method it answers to.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs/batch"),
    ("GET", "/v1/jobs/some-id"),
    ("GET", "/v1/jobs/some-id/events"),
    ("POST", "/v1/jobs/some-id/cancel"),
    ("POST", "/v1/jobs/some-id/retry"),
    ("GET", "/v1/queues"),
    ("POST", "/v1/queues/default/retry-failed"),
];

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(exp: u64) -> Claims {
    Claims {
        sub: "mallory".into(),
        tenant: TENANT.into(),
        scope: "jobs:write jobs:read admin".into(),
        exp,
        iat: None,
        iss: None,
        aud: None,
        nbf: None,
    }
}

fn sign(header: &Header, claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Sends `method path` with `token` (or none); returns status, body and the
/// `WWW-Authenticate` header.
async fn call(system: &System, method: &str, path: &str, token: Option<&str>) -> (StatusCode, Value, Option<String>) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), system.url(path)).json(&json!({"type": "noop"}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or(Value::Null), challenge)
}

/// Asserts that every route refuses `token` with 401 `unauthorized`.
async fn refused_everywhere(system: &System, token: Option<&str>, case: &str) {
    for (method, path) in ROUTES {
        let (status, body, challenge) = call(system, method, path, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {method} {path} answered {status} {body}");
        assert_eq!(body["code"], "unauthorized", "{case}: {body}");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{case}: no WWW-Authenticate");
    }
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_bad_token() {
    let system = System::start().await;
    let valid = sign(&Header::new(Algorithm::HS256), &claims(now() + 600), TEST_SECRET.as_bytes());
    let payload = valid.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let jku = Header { jku: Some("http://127.0.0.1:1/keys.json".into()), ..Header::new(Algorithm::HS256) };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a JWT", Some("not-a-token".into())),
        ("expired", Some(sign(&Header::new(Algorithm::HS256), &claims(now() - 5), TEST_SECRET.as_bytes()))),
        (
            "forged signature",
            Some(sign(&Header::new(Algorithm::HS256), &claims(now() + 600), b"another secret, also 32 bytes long")),
        ),
        ("alg none", Some(alg_none)),
        (
            "unexpected algorithm",
            Some(sign(&Header::new(Algorithm::HS384), &claims(now() + 600), TEST_SECRET.as_bytes())),
        ),
        ("key named in the header", Some(sign(&jku, &claims(now() + 600), TEST_SECRET.as_bytes()))),
        ("bad tenant claim", {
            let mut odd = claims(now() + 600);
            odd.tenant = "a:b".into();
            Some(sign(&Header::new(Algorithm::HS256), &odd, TEST_SECRET.as_bytes()))
        }),
    ];
    for (case, token) in &cases {
        refused_everywhere(&system, token.as_deref(), case).await;
    }
    // The same token, untampered, is accepted: the cases above fail for their flaw alone.
    assert_eq!(call(&system, "GET", "/v1/jobs", Some(&valid)).await.0, StatusCode::OK);
    // Health stays open.
    assert_eq!(call(&system, "GET", "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(call(&system, "GET", "/readyz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let system = System::start_with(|c| {
        c.auth.jwt_issuer = Some("https://id.example".into());
        c.auth.jwt_audience = Some("jobs-api".into());
    })
    .await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims(now() + 600);
        c.iss = iss.map(str::to_owned);
        c.aud = aud.map(|aud| Audience::One(aud.to_owned()));
        sign(&Header::new(Algorithm::HS256), &c, TEST_SECRET.as_bytes())
    };
    for (case, token) in [
        ("no issuer", with(None, Some("jobs-api"))),
        ("wrong issuer", with(Some("https://evil.example"), Some("jobs-api"))),
        ("no audience", with(Some("https://id.example"), None)),
        ("wrong audience", with(Some("https://id.example"), Some("other-api"))),
    ] {
        refused_everywhere(&system, Some(&token), case).await;
    }
    let right = with(Some("https://id.example"), Some("jobs-api"));
    assert_eq!(call(&system, "GET", "/v1/jobs", Some(&right)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn each_route_needs_its_scope() {
    let system = System::start().await;
    let read = token(TENANT, "jobs:read", Duration::from_secs(600));
    let write = token(TENANT, "jobs:write", Duration::from_secs(600));
    let nothing = token(TENANT, "", Duration::from_secs(600));
    for (method, path) in ROUTES {
        let needs_write = *method == "POST";
        let (allowed, denied) = if needs_write { (&write, &read) } else { (&read, &write) };
        for token in [denied, &nothing] {
            let (status, body, _) = call(&system, method, path, Some(token)).await;
            assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{method} {path}");
        }
        let (status, _, _) = call(&system, method, path, Some(allowed)).await;
        assert!(status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED, "{method} {path}: {status}");
    }
    // Operators' views need `admin`.
    let (status, body) = system.get("/v1/queues").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("workers").is_none() && body["queues"][0].get("latency_ms").is_none(), "{body}");
    let (status, body) = system.get_admin("/v1/queues").await;
    assert!(status == StatusCode::OK && body["workers"].is_array(), "{body}");
    assert_eq!(call(&system, "GET", "/metrics", Some(&read)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&system, "GET", "/metrics", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(system.admin.get(system.url("/metrics")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn no_tenant_sees_or_touches_another_tenants_jobs() {
    let system = System::start().await;
    let rival = client_for(&token("rival", "jobs:write jobs:read", Duration::from_secs(600)));
    let rival_admin = client_for(&token("rival", "admin", Duration::from_secs(600)));
    let worker = system.spawn_worker_with(|c| c.queues = vec!["default".into()]);
    let failed = system.submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    system.wait_for_status(&failed, "failed", Duration::from_secs(15)).await;
    let queued = system.submit(json!({"type": "noop", "queue": "parked"})).await;

    for id in [&failed, &queued] {
        for (method, path) in [
            ("GET", format!("/v1/jobs/{id}")),
            ("GET", format!("/v1/jobs/{id}/events")),
            ("POST", format!("/v1/jobs/{id}/cancel")),
            ("POST", format!("/v1/jobs/{id}/retry")),
        ] {
            let response = rival.request(method.parse().unwrap(), system.url(&path)).send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{method} {path}");
        }
    }
    let listed: Value = rival.get(system.url("/v1/jobs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["jobs"], json!([]), "the rival lists nothing");
    let retried: Value =
        rival.post(system.url("/v1/queues/default/retry-failed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(retried["retried"], 0);
    for client in [&rival, &rival_admin] {
        let queues: Value = client.get(system.url("/v1/queues")).send().await.unwrap().json().await.unwrap();
        for queue in queues["queues"].as_array().unwrap() {
            for status in ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"] {
                assert_eq!(queue[status], 0, "the rival counts another tenant's job: {queue}");
            }
        }
    }
    // The owner's counts hold both jobs; nothing the rival did changed them.
    let (_, queues) = system.get("/v1/queues").await;
    let count = |queue: &str, status: &str| {
        queues["queues"].as_array().unwrap().iter().find(|q| q["name"] == queue).map(|q| q[status].clone())
    };
    assert_eq!(count("default", "failed"), Some(json!(1)), "{queues}");
    assert_eq!(count("parked", "queued"), Some(json!(1)), "{queues}");
    assert_eq!(system.job(&failed).await["status"], "failed");
    assert_eq!(system.job(&queued).await["status"], "queued");

    // Idempotency keys are per tenant: the same key makes one job for each.
    let key = [("idempotency-key", "same-key")];
    let (_, mine, _) = system.post("/v1/jobs", &json!({"type": "noop", "queue": "parked"}), &key).await;
    let theirs: Value = rival
        .post(system.url("/v1/jobs"))
        .header("idempotency-key", "same-key")
        .json(&json!({"type": "noop", "queue": "parked"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(mine["id"], theirs["id"]);
    assert_eq!((mine["tenant"].as_str(), theirs["tenant"].as_str()), (Some(TENANT), Some("rival")));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn counts_follow_every_transition() {
    let system = System::start().await;
    let counts = || async {
        let (_, body) = system.get("/v1/queues").await;
        let queue = body["queues"].as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap().clone();
        ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"]
            .map(|status| queue[status].as_u64().unwrap())
    };
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let scheduled = system.submit(json!({"type": "noop", "run_at": later.to_rfc3339()})).await;
    let cancelled = system.submit(json!({"type": "noop"})).await;
    system.post(&format!("/v1/jobs/{cancelled}/cancel"), &json!({}), &[]).await;
    system.submit(json!({"type": "fail", "payload": {"times": 1}, "max_attempts": 2, "backoff_base_ms": 1})).await;
    let permanent = system.submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    assert_eq!(counts().await, [2, 1, 0, 0, 0, 0, 1]);
    let worker = system.spawn_worker();
    system.wait_for_status(&permanent, "failed", Duration::from_secs(15)).await;
    support::eventually(Duration::from_secs(15), "both runnable jobs ended", || async {
        (counts().await == [0, 1, 0, 0, 1, 1, 1]).then_some(())
    })
    .await;
    system.post(&format!("/v1/jobs/{permanent}/retry"), &json!({}), &[]).await;
    system.post(&format!("/v1/jobs/{scheduled}/cancel"), &json!({}), &[]).await;
    support::eventually(Duration::from_secs(15), "the retried job failed again", || async {
        (counts().await == [0, 0, 0, 0, 1, 1, 2]).then_some(())
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_rate_limit_holds_across_api_instances_and_only_for_its_tenant() {
    let limited = |c: &mut api::config::ApiConfig| {
        c.rate_limit.rate_limit_per_sec = 20;
        c.rate_limit.rate_limit_burst = 1_000;
    };
    let system = System::start_with(limited).await;
    let other_api = system.start_another_api_with(limited).await;
    // The whole burst in one batch: a batch counts as its number of jobs.
    let jobs = vec![json!({"type": "noop"}); 1_000];
    let (status, _, _) = system.post("/v1/jobs/batch", &json!({"jobs": jobs}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for base in [system.base.clone(), other_api] {
        let response = system
            .http
            .post(format!("{base}/v1/jobs/batch"))
            .json(&json!({"jobs": vec![json!({"type": "noop"}); 100]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{base}");
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((4..=6).contains(&retry_after), "100 jobs at 20/s: Retry-After {retry_after}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "rate_limited");
    }
    // Nothing of the refused batches was stored.
    let (_, queues) = system.get("/v1/queues").await;
    assert_eq!(queues["queues"][0]["queued"], 1_000, "{queues}");
    // Another tenant has its own bucket.
    let rival = client_for(&token("rival", "jobs:write", Duration::from_secs(600)));
    let response = rival.post(system.url("/v1/jobs")).json(&json!({"type": "noop"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The bucket refills: a single job goes through once a twentieth of a second has passed.
    support::eventually(Duration::from_secs(3), "the bucket refilled", || async {
        (system.post("/v1/jobs", &json!({"type": "noop"}), &[]).await.0 == StatusCode::ACCEPTED).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_token_not_valid_yet_or_living_too_long_is_refused_and_an_array_audience_is_accepted() {
    let system = System::start_with(|c| {
        c.auth.jwt_audience = Some("jobs-api".into());
        c.auth.jwt_max_ttl_secs = 3600;
    })
    .await;
    let signed = |c: &Claims| sign(&Header::new(Algorithm::HS256), c, TEST_SECRET.as_bytes());
    let mut early = claims(now() + 600);
    early.aud = Some(Audience::One("jobs-api".into()));
    early.nbf = Some(now() + 300);
    refused_everywhere(&system, Some(&signed(&early)), "nbf in the future").await;
    let mut long = claims(now() + 7200);
    long.aud = Some(Audience::One("jobs-api".into()));
    long.iat = Some(now());
    refused_everywhere(&system, Some(&signed(&long)), "two hours of life, one allowed").await;

    let mut many = claims(now() + 600);
    many.aud = Some(Audience::Many(vec!["other-api".into(), "jobs-api".into()]));
    let (status, body, _) = call(&system, "GET", "/v1/jobs", Some(&signed(&many))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_admin_token_of_another_tenant_sees_nothing_of_the_others() {
    let system = System::start().await;
    system.submit(json!({"type": "noop", "queue": "acme-only"})).await;
    let outsider = client_for(&token("globex", "admin", Duration::from_secs(600)));
    let queues: Value = outsider.get(system.url("/v1/queues")).send().await.unwrap().json().await.unwrap();
    assert_eq!(queues["queues"], json!([]), "no other tenant's queue names: {queues}");
    assert!(queues.get("workers").is_none(), "no workers: {queues}");
    let metrics = outsider.get(system.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::FORBIDDEN);
    // The operators' tenant (ADMIN_TENANT, acme in these tests) sees both.
    let (_, own) = system.get_admin("/v1/queues").await;
    assert!(own["workers"].is_array(), "{own}");
    assert_eq!(system.admin.get(system.url("/metrics")).send().await.unwrap().status(), StatusCode::OK);
}
