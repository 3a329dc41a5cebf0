//! `jobs dev`: the API and a worker in one process, ready to try.

use std::process::Command;

/// `jobs dev` prints where the API listens and a token that works there.
#[test]
fn dev_prints_a_working_token() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let redis = shared::testkit::RedisServer::start();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_jobs"))
        .arg("dev")
        .env("REDIS_URL", redis.url())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let (mut base, mut token) = (None, None);
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("API listening on ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(value) = line.strip_prefix("export TOKEN=") {
            token = Some(value.trim().to_owned());
            break;
        }
    }
    let (base, token) = (base.expect("the address is printed"), token.expect("a token is printed"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (with, without) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let with = client.get(format!("{base}/v1/queues")).bearer_auth(&token).send().await.unwrap();
        let body: serde_json::Value = with.json().await.unwrap();
        let without = client.get(format!("{base}/v1/queues")).send().await.unwrap().status();
        (body, without)
    });
    assert!(with["workers"].is_array(), "the dev token has every scope: {with}");
    assert_eq!(without, reqwest::StatusCode::UNAUTHORIZED);
    let _ = dev.kill();
    let _ = dev.wait();
}
