//! `jobs dev`: the API and a worker in one process, ready to try: a token that
//! works, and without `SMTP_URL` a mail catcher, so the first `email.send` job
//! succeeds and its message can be read back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A `jobs dev` process, killed when dropped.
struct Dev {
    child: Child,
    base: String,
    token: String,
    printed: Vec<String>,
    /// Kept open: `dev` goes on printing, and a closed pipe would end it.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `jobs dev` on `redis_url`, without SMTP_URL or JWT_SECRET, and reads
/// what it prints up to the token.
fn dev(redis_url: &str) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobs"))
        .arg("dev")
        .env("REDIS_URL", redis_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("JWT_SECRET")
        .env_remove("SMTP_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut printed) = (None, None, Vec::new());
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("API listening on ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(value) = line.strip_prefix("export TOKEN=") {
            token = Some(value.trim().to_owned());
        }
        printed.push(line);
        if token.is_some() {
            break;
        }
    }
    let (base, token) = (base.expect("the address is printed"), token.expect("a token is printed"));
    Dev { child, base, token, printed, _stdout: lines }
}

#[test]
fn dev_prints_a_working_token() {
    let redis = shared::testkit::RedisServer::start();
    let dev = dev(&redis.url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (with, without) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let with = client.get(format!("{}/v1/queues", dev.base)).bearer_auth(&dev.token).send().await.unwrap();
        let body: Value = with.json().await.unwrap();
        let without = client.get(format!("{}/v1/queues", dev.base)).send().await.unwrap().status();
        (body, without)
    });
    assert!(with["workers"].is_array(), "the dev token has every scope: {with}");
    assert_eq!(without, reqwest::StatusCode::UNAUTHORIZED);
}

#[test]
fn without_smtp_url_the_first_confirmation_email_is_caught_and_can_be_read() {
    let redis = shared::testkit::RedisServer::start();
    let dev = dev(&redis.url());
    assert!(dev.printed.iter().any(|l| l.contains("mail goes to the built-in catcher")), "{:?}", dev.printed);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let job = json!({"type": "email.send", "payload": {"to": ["ada@example.org", "bob@example.org"],
            "subject": "Confirm your address", "text": "Click the link."}});
        let response =
            client.post(format!("{}/v1/jobs", dev.base)).bearer_auth(&dev.token).json(&job).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        let record = loop {
            let url = format!("{}/v1/jobs/{id}", dev.base);
            let record: Value = client.get(url).bearer_auth(&dev.token).send().await.unwrap().json().await.unwrap();
            if record["status"] == "succeeded" {
                break record;
            }
            assert!(Instant::now() < deadline, "the email job did not succeed: {record}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(record["attempts"], 1, "sent at the first attempt: {record}");

        let mail = format!("{}/dev/mail", dev.base);
        assert_eq!(client.get(&mail).send().await.unwrap().status(), 401, "the caught mail needs a token");
        let caught: Value = client.get(&mail).bearer_auth(&dev.token).send().await.unwrap().json().await.unwrap();
        let message = &caught["messages"][0];
        assert_eq!(message["subject"], "Confirm your address", "{caught}");
        assert_eq!(message["to"], json!(["ada@example.org", "bob@example.org"]));
        assert!(message["raw"].as_str().unwrap().contains(&format!("X-Job-Id: {id}")), "{message}");
    });
}
