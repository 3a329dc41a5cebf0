//! One clock: an API host whose clock is an hour behind still stores Redis's
//! time as a job's creation and due times. The API runs as a real process under
//! libfaketime (Debian's `faketime`), which shifts its wall clock only.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::testkit::{RedisServer, free_port};

const SECRET: &str = "a secret for tests, thirty-two bytes at least";
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

struct ApiProcess(Child);

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().expect("a timestamp").parse().expect("RFC 3339")
}

#[tokio::test]
async fn a_skewed_api_clock_moves_neither_creation_nor_due_times() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime is not installed: `apt-get install faketime` (.ci/run does)"
    );
    let redis = RedisServer::start();
    let port = free_port();
    let _api = ApiProcess(
        Command::new(env!("CARGO_BIN_EXE_api"))
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", "-1h")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("REDIS_URL", redis.url())
            .env("REDIS_PREFIX", "clock")
            .env("JWT_SECRET", SECRET)
            .env("DEMO_JOBS", "true")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("api starts"),
    );
    let mut config = api::config::ApiConfig::defaults();
    config.auth.jwt_secret = Some(SECRET.to_owned().into());
    let request = api::auth::TokenRequest {
        tenant: "acme",
        subject: "test",
        scope: "jobs:write jobs:read",
        ttl: Duration::from_secs(4 * 3600),
        private_key_file: None,
    };
    let token = api::auth::mint(&config.auth, &request).expect("token");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(std::time::Instant::now() < deadline, "the API did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let submitted = Utc::now();
    let response = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&token)
        .json(&json!({"type": "noop", "delay_ms": 3000}))
        .send()
        .await
        .expect("submitted");
    assert_eq!(response.status(), 202);
    let record: Value = response.json().await.unwrap();

    let created = at(&record["created_at"]);
    let skew = (created - submitted).num_milliseconds().abs();
    assert!(skew < 2_000, "created_at {created} is {skew} ms off the real time {submitted}");
    assert_eq!(record["status"], "scheduled");
    assert_eq!((at(&record["scheduled_at"]) - created).num_milliseconds(), 3_000, "{record}");
}
