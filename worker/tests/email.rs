//! `email.send` end to end: the API enqueues, the real worker sends with lettre
//! to a real SMTP server, and the server's replies (250, 451, 550, or no server
//! at all) decide whether the job succeeds, retries or fails.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use shared::testkit::SmtpMode;
use support::System;

/// Long enough for a few quick attempts; every wait ends as soon as its condition holds.
const WITHIN: Duration = Duration::from_secs(8);

/// An `email.send` request to one recipient whose retries come after 50-100 ms.
fn quick_retry_mail(to: &str) -> Value {
    json!({
        "type": "email.send",
        "payload": {"to": to, "subject": "Retry me", "text": "hello"},
        "backoff_base_ms": 50,
        "backoff_cap_ms": 100,
    })
}

#[tokio::test]
async fn a_sent_email_carries_the_workers_sender_every_recipient_and_a_message_id_derived_from_the_job() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system
        .submit(json!({
            "type": "email.send",
            "payload": {"to": ["ada@example.org", "grace@example.net"], "subject": "Quarterly report", "text": "Numbers attached."},
        }))
        .await;

    let record = system.wait_for_status(&id, "succeeded", WITHIN).await;
    let message_id = format!("<{id}@example.test>");
    assert_eq!(record["attempts"], 1, "{record}");
    assert_eq!(record["result"]["message_id"], message_id.as_str(), "{record}");

    let mails = system.smtp.wait_for_messages(1, WITHIN).await;
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "jobs@example.test");
    assert_eq!(mail.to, ["ada@example.org", "grace@example.net"]);
    assert_eq!(mail.header("From").as_deref(), Some("Jobs <jobs@example.test>"), "{}", mail.data);
    assert_eq!(mail.header("To"), None, "several recipients go in the envelope only: {}", mail.data);
    assert_eq!(mail.header("Bcc"), None, "{}", mail.data);
    assert_eq!(mail.header("Subject").as_deref(), Some("Quarterly report"));
    assert_eq!(mail.header("Message-ID"), Some(message_id));
    assert_eq!(mail.header("X-Job-Id").as_deref(), Some(id.as_str()));
    assert_eq!(mail.header("X-Job-Run").as_deref(), Some("1"), "the job's first run");
    assert_eq!(record["result"]["run"], 1, "{record}");
    let content_type = mail.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "a text-only mail is text/plain: {content_type}");
    assert!(mail.body().contains("Numbers attached."), "{}", mail.data);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_html_body_is_sent_as_multipart_alternative_with_the_text_part_first() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let id = system
        .submit(json!({
            "type": "email.send",
            "payload": {"to": "ada@example.org", "subject": "Both", "text": "plain words", "html": "<p>rich words</p>"},
        }))
        .await;
    system.wait_for_status(&id, "succeeded", WITHIN).await;

    let mails = system.smtp.wait_for_messages(1, WITHIN).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    let content_type = mail.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("multipart/alternative"), "{content_type}");
    let body = mail.body();
    let (plain, html) = (body.find("Content-Type: text/plain"), body.find("Content-Type: text/html"));
    assert!(matches!((plain, html), (Some(p), Some(h)) if p < h), "text part, then html part:\n{body}");
    assert!(body.contains("plain words") && body.contains("<p>rich words</p>"), "{body}");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_4xx_reply_is_retried_and_the_second_attempt_delivers_the_same_message() {
    let system = System::start().await;
    system.smtp.set_mode(SmtpMode::TempFailTimes(1));
    let worker = system.spawn_worker();
    let id = system.submit(quick_retry_mail("ada@example.org")).await;

    let record = system.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(record["attempts"], 2, "{record}");
    let history = system.history(&id).await;
    let retrying =
        history.iter().find(|e| e["status"] == "retrying").unwrap_or_else(|| panic!("no retry: {history:?}"));
    assert_eq!(retrying["attempt"], 1, "{retrying}");
    let error = retrying["error"].as_str().unwrap_or_default();
    assert!(error.contains("transient") && error.contains("451"), "{error}");

    let mails = system.smtp.wait_for_messages(1, WITHIN).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].header("Message-ID"), Some(format!("<{id}@example.test>")));
    assert_eq!(system.smtp.rcpt_attempts(), 2, "one refused RCPT, one accepted");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_5xx_reply_fails_the_job_at_once_despite_attempts_left() {
    let system = System::start().await;
    system.smtp.set_mode(SmtpMode::PermFail);
    let worker = system.spawn_worker();
    let id = system.submit(quick_retry_mail("ada@example.org")).await;

    let record = system.wait_for_status(&id, "failed", WITHIN).await;
    assert_eq!((record["attempts"].as_u64(), record["max_attempts"].as_u64()), (Some(1), Some(8)), "{record}");
    let error = record["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("permanent") && error.contains("550"), "{error}");
    let statuses: Vec<Value> = system.history(&id).await.iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, ["queued", "running", "failed"].map(Value::from));
    assert_eq!(system.smtp.rcpt_attempts(), 1, "the server was asked once");
    assert!(system.smtp.messages().is_empty(), "{:?}", system.smtp.messages());
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried_until_the_attempts_run_out() {
    let system = System::start().await;
    let closed = format!("smtp://127.0.0.1:{}", shared::testkit::free_port());
    let worker = system.spawn_worker_with(|c| c.smtp_url = closed.into());
    let mut request = quick_retry_mail("ada@example.org");
    request["max_attempts"] = json!(2);
    let id = system.submit(request).await;

    let record = system.wait_for_status(&id, "failed", WITHIN).await;
    assert_eq!(record["attempts"], 2, "{record}");
    let error = record["last_error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("transient") && error.contains("connect"), "{error}");
    let statuses: Vec<Value> = system.history(&id).await.iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, ["queued", "running", "retrying", "queued", "running", "failed"].map(Value::from));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_logs_carry_job_fields_but_never_full_addresses_or_payload_text() {
    let system = System::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut worker = system.spawn_worker_process_logging_to(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info")], log);
    let id = system
        .submit(json!({
            "type": "email.send",
            "payload": {"to": "secret.person@example.org", "subject": "s3cr3t subject", "text": "password=hunter2"}
        }))
        .await;
    system.wait_for_status(&id, "succeeded", Duration::from_secs(15)).await;
    worker.terminate(Duration::from_secs(10)).expect("worker exits");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}")))
        .collect();
    let sent =
        lines.iter().find(|l| l["message"] == "email sent").unwrap_or_else(|| panic!("no `email sent` line in {text}"));
    assert_eq!(sent["span"]["job.id"], id.as_str(), "{sent}");
    assert_eq!(sent["span"]["job.type"], "email.send");
    assert_eq!(sent["span"]["attempt"], 1);
    assert!(text.contains("s***@example.org"), "the masked address is logged");
    for secret in ["secret.person", "hunter2", "s3cr3t"] {
        assert!(!text.contains(secret), "`{secret}` leaked into the log");
    }
}
