//! `GET /v1/events` as Server-Sent Events (`Accept: text/event-stream`): the
//! same authentication and filters as the socket, `id:` lines, and resume
//! through `Last-Event-ID`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::events::{SseReader, now_secs, signed};
use support::{System, TENANT, token};

const WAIT: Duration = Duration::from_secs(10);

fn reader() -> String {
    token(TENANT, "jobs:read", Duration::from_secs(3600))
}

#[tokio::test]
async fn the_event_stream_needs_a_valid_token_with_the_read_scope() {
    let system = System::start().await;
    let url = system.url("/v1/events");
    let expired = signed(&json!({"sub": "t", "tenant": TENANT, "scope": "jobs:read", "exp": now_secs() - 5}));
    for (case, token, expected) in [
        ("no token", String::new(), 401),
        ("expired", expired, 401),
        ("write scope only", token(TENANT, "jobs:write", WAIT), 403),
    ] {
        let Err((status, body)) = SseReader::open(&url, &token, &[]).await else { panic!("{case}: stream opened") };
        assert_eq!(status, expected, "{case}: {body}");
    }
    let Err((status, _)) = SseReader::open(&url, &reader(), &[("origin", "https://evil.test")]).await else {
        panic!("a foreign origin opened the stream")
    };
    assert_eq!(status, 403);
    // Neither an upgrade nor an event stream.
    let response = support::client_for(&reader()).get(&url).send().await.expect("sent");
    assert_eq!(response.status(), 426);
    // The token also works as `?access_token=`.
    let mut stream =
        SseReader::open(&format!("{url}?access_token={}", reader()), "", &[]).await.expect("stream opened");
    assert_eq!(stream.next(WAIT).await.event.as_deref(), Some("subscribed"));
}

#[tokio::test]
async fn the_event_stream_filters_by_queue_and_by_job() {
    let system = System::start().await;
    let mut by_queue = SseReader::open(&system.url("/v1/events?queue=reports"), &reader(), &[]).await.expect("opened");
    let ack = by_queue.next(WAIT).await;
    assert_eq!(ack.json(), json!({"op": "subscribed", "jobs": [], "queues": ["reports"], "all": false}));
    let elsewhere = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    let wanted = system.submit(json!({"type": "noop", "queue": "reports", "delay_ms": 60_000})).await;
    let event = by_queue.next(WAIT).await;
    assert_eq!(event.json()["job_id"], wanted.as_str(), "{elsewhere} is on another queue");
    assert_eq!(event.id.as_deref(), event.json()["id"].as_str(), "the `id:` line is the event id");

    let mut by_job =
        SseReader::open(&system.url(&format!("/v1/events?job={wanted}")), &reader(), &[]).await.expect("opened");
    assert_eq!(by_job.next(WAIT).await.event.as_deref(), Some("subscribed"));
    let snapshot = by_job.next(WAIT).await;
    assert_eq!(snapshot.event.as_deref(), Some("snapshot"));
    assert_eq!(snapshot.json()["job"]["id"], wanted.as_str());
    assert_eq!(snapshot.json()["job"]["status"], "scheduled");
    let (status, _, _) = system.post(&format!("/v1/jobs/{wanted}/cancel"), &json!({}), &[]).await;
    assert_eq!(status, 200);
    let change = by_job.next(WAIT).await;
    assert_eq!(
        (change.json()["job_id"].as_str(), change.json()["status"].as_str()),
        (Some(wanted.as_str()), Some("cancelled"))
    );
    assert!(change.id > snapshot.id, "changes follow the snapshot");
}

#[tokio::test]
async fn last_event_id_resumes_the_stream_without_a_gap_or_a_duplicate() {
    let system = System::start().await;
    let url = system.url("/v1/events");
    let mut stream = SseReader::open(&url, &reader(), &[]).await.expect("opened");
    stream.next(WAIT).await;
    let first = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    let seen = stream.next(WAIT).await;
    assert_eq!(seen.json()["job_id"], first.as_str());
    let last_id = seen.id.expect("id line");
    drop(stream);

    let mut missed = Vec::new();
    for _ in 0..5 {
        missed.push(system.submit(json!({"type": "noop", "delay_ms": 60_000})).await);
    }
    let mut resumed = SseReader::open(&url, &reader(), &[("last-event-id", &last_id)]).await.expect("reopened");
    assert_eq!(resumed.next(WAIT).await.event.as_deref(), Some("subscribed"));
    let later = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    missed.push(later);
    let mut got = Vec::new();
    while got.len() < missed.len() {
        let event = resumed.next(WAIT).await;
        got.push(event.json()["job_id"].as_str().expect("job id").to_owned());
    }
    assert_eq!(got, missed, "the missed events, then live ones, each once");
}
