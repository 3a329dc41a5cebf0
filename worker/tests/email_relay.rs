//! `email.send` is not an open relay: it needs its own scope, recipients can be
//! held to the operator's domains, a tenant's recipients per day are capped,
//! recipients never see each other, and every message names its tenant.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{System, TENANT, client_for, token};

const WITHIN: Duration = Duration::from_secs(10);

fn mail(to: Value) -> Value {
    json!({"type": "email.send", "payload": {"to": to, "subject": "Hello", "text": "hi"}})
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> (StatusCode, Value) {
    let response = client.post(url).json(body).send().await.expect("request sent");
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn email_jobs_need_the_email_send_scope() {
    let system = System::start().await;
    let writer = client_for(&token(TENANT, "jobs:write jobs:read", Duration::from_secs(600)));
    let (status, error) = post(&writer, system.url("/v1/jobs"), &mail(json!("ada@example.org"))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("email:send"), "{error}");
    let batch = json!({"jobs": [{"type": "noop"}, mail(json!("ada@example.org"))]});
    let (status, _) = post(&writer, system.url("/v1/jobs/batch"), &batch).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "one mail in a batch needs the scope too");
    let (status, _) = post(&writer, system.url("/v1/jobs"), &json!({"type": "noop"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "other types need only jobs:write");

    let mailer = client_for(&token(TENANT, "jobs:write email:send", Duration::from_secs(600)));
    let (status, record) = post(&mailer, system.url("/v1/jobs"), &mail(json!("ada@example.org"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{record}");
    let (_, listed) = system.get("/v1/jobs?type=email.send").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "the refused ones stored nothing: {listed}");
}

#[tokio::test]
async fn recipients_outside_the_allowed_domains_are_refused_and_nothing_is_stored() {
    let system = System::start_with(|config| {
        config.isolation.email_allowed_domains = vec!["example.org".into(), "*.corp.example".into()];
    })
    .await;
    system.submit(mail(json!(["ada@example.org", "grace@eu.corp.example"]))).await;

    let (status, error, _) = system.post("/v1/jobs", &mail(json!(["ada@example.org", "eve@evil.test"])), &[]).await;
    assert_eq!(
        (status, error["code"].as_str(), error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_not_allowed"), Some("payload.to[1]")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("evil.test"), "{error}");
    let batch = json!({"jobs": [mail(json!("ada@example.org")), mail(json!("bob@corp.example"))]});
    let (status, error, _) = system.post("/v1/jobs/batch", &batch, &[]).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("jobs[1].payload.to[0]")));
    let (_, listed) = system.get("/v1/jobs").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "only the allowed job: {listed}");
}

#[tokio::test]
async fn a_tenants_daily_recipients_are_capped_and_the_refusal_says_when_it_renews() {
    let system = System::start_with(|config| config.isolation.email_daily_recipients = 5).await;
    system.submit(mail(json!(["a@example.org", "b@example.org", "c@example.org"]))).await;
    let (status, error, headers) =
        system.post("/v1/jobs", &mail(json!(["d@example.org", "e@example.org", "f@example.org"])), &[]).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")), "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("3 recipients") && message.contains("EMAIL_DAILY_RECIPIENTS"), "{message}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "until midnight UTC: {retry_after}");
    // What fits still goes, a replay costs nothing, and other tenants have their own count.
    let key = [("idempotency-key", "two-more")];
    let two = mail(json!(["d@example.org", "e@example.org"]));
    assert_eq!(system.post("/v1/jobs", &two, &key).await.0, StatusCode::ACCEPTED);
    assert_eq!(system.post("/v1/jobs", &two, &key).await.0, StatusCode::ACCEPTED, "a replay");
    let (status, _, _) = system.post("/v1/jobs", &mail(json!("g@example.org")), &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "5 of 5 used");
    let other = client_for(&token("globex", "jobs:write email:send", Duration::from_secs(600)));
    let (status, _) = post(&other, system.url("/v1/jobs"), &mail(json!(["a@example.org", "b@example.org"]))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn recipients_of_one_job_never_see_each_other_and_every_message_names_its_tenant() {
    let system = System::start().await;
    let worker = system.spawn_worker();
    let group = system.submit(mail(json!(["ada@example.org", "grace@example.net", "alan@example.com"]))).await;
    system.wait_for_status(&group, "succeeded", WITHIN).await;
    let mails = system.smtp.wait_for_messages(1, WITHIN).await;
    assert_eq!(mails.len(), 1, "one message, one SMTP transaction: {mails:?}");
    let sent = &mails[0];
    assert_eq!(sent.to, ["ada@example.org", "grace@example.net", "alan@example.com"], "every one in the envelope");
    for address in ["ada@", "grace@", "alan@"] {
        assert!(!sent.data.contains(address), "{address} is visible in the message:\n{}", sent.data);
    }
    assert_eq!(sent.header("X-Job-Tenant").as_deref(), Some(TENANT), "{}", sent.data);
    assert_eq!(sent.header("X-Job-Id").as_deref(), Some(group.as_str()));

    let single = system.submit(mail(json!("ada@example.org"))).await;
    system.wait_for_status(&single, "succeeded", WITHIN).await;
    let mails = system.smtp.wait_for_messages(2, WITHIN).await;
    let alone = mails.iter().find(|m| m.header("X-Job-Id").as_deref() == Some(single.as_str())).unwrap();
    assert_eq!(alone.header("To").as_deref(), Some("ada@example.org"), "a lone recipient is addressed openly");
    worker.shutdown().await.unwrap();
}
