//! The API's memory and connections are bounded: listings and snapshots carry
//! payloads only when asked, event connections and replays are capped per
//! instance and per tenant, a replay reads at most `EVENTS_REPLAY_MAX` events,
//! a write that stalls closes its connection, and clients that never read
//! cannot slow down one that does. Real server processes (`jobs dev`) where
//! a setting comes from the environment or the server's memory is measured.

#[path = "../../worker/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::events::*;
use support::{System, TENANT, WorkerProcess, client_for, token};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
/// Scheduled an hour ahead: each job makes one event and then stays put.
const LATER: u64 = 3_600_000;

fn reader() -> String {
    token(TENANT, "jobs:read", Duration::from_secs(3600))
}

fn writer() -> reqwest::Client {
    client_for(&token(TENANT, "jobs:write jobs:read", Duration::from_secs(3600)))
}

/// `jobs dev` (the API and a worker in one process) with these settings.
async fn dev(system: &System, env: &[(&str, &str)]) -> (WorkerProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let bind = format!("127.0.0.1:{port}");
    let mut all = vec![("BIND_ADDR", bind.as_str()), ("JWT_SECRET", support::TEST_SECRET), ("RATE_LIMIT_PER_SEC", "0")];
    all.extend_from_slice(env);
    let server = dev_server(system, &all);
    support::eventually(Duration::from_secs(30), "the dev server", || {
        let url = format!("{base}/readyz");
        async move { reqwest::get(url).await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await;
    (server, base)
}

/// Submits `batches` batches of 1,000 jobs scheduled an hour ahead: 1,000 events each.
async fn flood(base: &str, batches: usize) {
    let writer = writer();
    let batch = json!({"jobs": vec![json!({"type": "noop", "delay_ms": LATER}); 1_000]});
    for _ in 0..batches {
        let response = writer.post(format!("{base}/v1/jobs/batch")).json(&batch).send().await.expect("sent");
        assert_eq!(response.status(), 202);
    }
}

/// A socket whose kernel buffer takes in little, and which is never read.
async fn stuck_socket(base: &str, query: &str) -> Socket {
    let addr = base.trim_start_matches("http://");
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("small buffer");
    let stream = tcp.connect(addr.parse().expect("addr")).await.expect("connect");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(events_url(base, query))
            .expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {}", reader()).parse().expect("header"));
    let (socket, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
        .expect("upgraded");
    socket
}

/// The id of an event that happened now: a job submitted and seen on a socket.
async fn an_event_id(base: &str) -> String {
    let mut socket = connect(base, "", &reader()).await;
    read_until(&mut socket, WAIT, |m| m["op"] == "subscribed").await;
    let response = writer().post(format!("{base}/v1/jobs")).json(&json!({"type": "noop", "delay_ms": LATER}));
    assert_eq!(response.send().await.expect("sent").status(), 202);
    let event = read_until(&mut socket, WAIT, |m| m["op"] == "event").await.pop().expect("event");
    event["id"].as_str().expect("id").to_owned()
}

fn upgrade_status(result: Upgrade) -> (u16, Value) {
    match result {
        Upgrade::Open(..) => (101, Value::Null),
        Upgrade::Refused(status, body) => (status, body),
    }
}

async fn try_open(base: &str, query: &str, token: &str) -> Upgrade {
    upgrade(base, query, &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn listings_and_snapshots_carry_payloads_only_when_asked() {
    let system = System::start().await;
    let jobs: Vec<Value> =
        (0..250).map(|ms| json!({"type": "sleep", "payload": {"ms": ms}, "delay_ms": LATER})).collect();
    let (status, body, _) = system.post("/v1/jobs/batch", &json!({ "jobs": jobs }), &[]).await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<String> = body["ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();

    let (_, page) = system.get("/v1/jobs?limit=500").await;
    let listed = page["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 250);
    assert!(listed.iter().all(|job| job.get("payload").is_none() && job["status"] == "scheduled"), "{}", listed[0]);
    let (_, page) = system.get("/v1/jobs?limit=500&include=payload").await;
    let mut payloads: Vec<u64> =
        page["jobs"].as_array().unwrap().iter().map(|job| job["payload"]["ms"].as_u64().unwrap()).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, (0..250).collect::<Vec<u64>>());
    let (status, error) = system.get("/v1/jobs?include=secrets").await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str(), error["field"].as_str()),
        (400, Some("bad_parameter"), Some("include"))
    );
    assert_eq!(system.job(&ids[7]).await["payload"]["ms"], 7, "one job's own read carries it");

    // Snapshots: lean by default; with include=payload, every one in request order,
    // sent a page at a time after the acknowledgement, then live changes only.
    let query = format!("job={}", ids.join(","));
    let mut lean = connect(&system.base, &query, &reader()).await;
    let mut full = connect(&system.base, &format!("{query}&include=payload"), &reader()).await;
    for (socket, with_payload) in [(&mut lean, false), (&mut full, true)] {
        let first = next_json(socket, WAIT).await;
        assert_eq!(first["op"], "subscribed", "{first}");
        for (i, id) in ids.iter().enumerate() {
            let snapshot = next_json(socket, WAIT).await;
            assert_eq!(
                (snapshot["op"].as_str(), snapshot["job"]["id"].as_str()),
                (Some("snapshot"), Some(id.as_str()))
            );
            match with_payload {
                true => assert_eq!(snapshot["job"]["payload"]["ms"], i as u64),
                false => assert!(snapshot["job"].get("payload").is_none(), "{snapshot}"),
            }
        }
    }
    let (status, _, _) = system.post(&format!("/v1/jobs/{}/cancel", ids[3]), &json!({}), &[]).await;
    assert_eq!(status, 200);
    for socket in [&mut lean, &mut full] {
        let event = next_json(socket, WAIT).await;
        assert_eq!((event["op"].as_str(), event["job_id"].as_str()), (Some("event"), Some(ids[3].as_str())));
        assert_eq!(event["status"], "cancelled");
    }
    // A subscription message can ask too, and a bad `include` is an error message.
    send_json(&mut lean, json!({"op": "subscribe", "jobs": [ids[9]], "include": "payload"})).await;
    let seen = read_until(&mut lean, WAIT, |m| m["op"] == "snapshot").await;
    assert_eq!(seen.last().unwrap()["job"]["payload"]["ms"], 9, "{seen:?}");
    send_json(&mut lean, json!({"op": "subscribe", "jobs": [ids[9]], "include": "everything"})).await;
    let error = next_json(&mut lean, WAIT).await;
    assert_eq!((error["op"].as_str(), error["code"].as_str()), (Some("error"), Some("bad_parameter")), "{error}");
}

#[tokio::test]
async fn event_connections_past_the_caps_are_refused_before_the_upgrade() {
    let system = System::start().await;
    let (_server, base) = dev(&system, &[("WS_MAX_PER_TENANT", "3"), ("WS_MAX_CONNECTIONS", "5")]).await;
    let of = |tenant: &str| token(tenant, "jobs:read", Duration::from_secs(600));
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(try_open(&base, "", &of("a")).await.open());
    }
    let (status, body) = upgrade_status(try_open(&base, "", &of("a")).await);
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_connections")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("WS_MAX_PER_TENANT"), "{body}");
    // Server-Sent Events count the same.
    let refused = SseReader::open(&format!("{base}/v1/events"), &of("a"), &[]).await.err().expect("refused");
    assert_eq!((refused.0, refused.1["code"].as_str()), (429, Some("too_many_connections")));

    let _b: Vec<Socket> = vec![try_open(&base, "", &of("b")).await.open(), try_open(&base, "", &of("b")).await.open()];
    let (status, body) = upgrade_status(try_open(&base, "", &of("c")).await);
    assert_eq!((status, body["code"].as_str()), (503, Some("too_many_connections")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("WS_MAX_CONNECTIONS"), "{body}");

    // A closed socket gives its place back.
    a.pop().expect("socket").close(None).await.expect("closed");
    support::eventually(WAIT, "a place for tenant a again", || {
        let (base, token) = (base.clone(), of("a"));
        async move { matches!(try_open(&base, "", &token).await, Upgrade::Open(..)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_replay_further_back_than_events_replay_max_gets_a_gap_then_goes_live() {
    let system = System::start().await;
    let (_server, base) = dev(&system, &[("EVENTS_REPLAY_MAX", "1500")]).await;
    let since = an_event_id(&base).await;
    flood(&base, 4).await;

    let mut socket = connect(&base, &format!("since={since}"), &reader()).await;
    let seen = read_until(&mut socket, WAIT, |m| m["op"] == "gap").await;
    let events: Vec<&Value> = seen.iter().filter(|m| m["op"] == "event").collect();
    assert_eq!(seen[0]["op"], "subscribed");
    assert!(!events.is_empty() && events.len() < 4_000, "{} events replayed before the gap", events.len());
    let gap = seen.last().unwrap();
    assert_eq!(gap["since"], events.last().unwrap()["id"], "the gap starts after the last event replayed: {gap}");
    // Then the live stream: the next change arrives, and nothing skipped comes after it.
    let response = writer().post(format!("{base}/v1/jobs")).json(&json!({"type": "noop", "delay_ms": LATER}));
    let live: Value = response.send().await.expect("sent").json().await.expect("record");
    let next = next_json(&mut socket, WAIT).await;
    assert_eq!((next["op"].as_str(), next["job_id"].as_str()), (Some("event"), live["id"].as_str()), "{next}");
    eprintln!("{} events replayed, then gap {gap}", events.len());
}

#[tokio::test]
async fn concurrent_replays_per_tenant_are_capped_and_a_replay_ends_when_its_client_leaves() {
    let system = System::start().await;
    let env = [("EVENTS_REPLAYS_PER_TENANT", "1"), ("EVENTS_REPLAY_MAX", "1000000"), ("WS_WRITE_TIMEOUT_SECS", "600")];
    let (_server, base) = dev(&system, &env).await;
    let since = an_event_id(&base).await;
    // More history than the socket buffers on both ends hold, so a client that
    // does not read holds its replay open.
    flood(&base, 60).await;
    let stuck = stuck_socket(&base, &format!("since={since}")).await;

    let (status, body) = upgrade_status(try_open(&base, &format!("since={since}"), &reader()).await);
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_replays")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("EVENTS_REPLAYS_PER_TENANT"), "{body}");
    // Without `since` there is no replay to wait for.
    let mut live = connect(&base, "", &reader()).await;
    assert_eq!(next_json(&mut live, WAIT).await["op"], "subscribed");
    // …and a subscription message with `since` meets the same cap.
    send_json(&mut live, json!({"op": "subscribe", "queue": "default", "since": since})).await;
    let error = next_json(&mut live, WAIT).await;
    assert_eq!((error["op"].as_str(), error["code"].as_str()), (Some("error"), Some("too_many_replays")), "{error}");

    // The client leaves in the middle of its replay: its place comes back.
    drop(stuck);
    support::eventually(WAIT, "a replay place again", || {
        let (base, since) = (base.clone(), since.clone());
        async move { matches!(try_open(&base, &format!("since={since}"), &reader()).await, Upgrade::Open(..)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_connection_whose_writes_stall_is_closed_after_the_write_timeout() {
    let system = System::start().await;
    // A queue too large to overflow here: only the write timeout can end the stuck ones.
    let env = [("WS_WRITE_TIMEOUT_SECS", "1"), ("WS_MAX_PER_TENANT", "2"), ("WS_BUFFER", "65536")];
    let (_server, base) = dev(&system, &env).await;
    let stuck_ws = stuck_socket(&base, "").await;
    let stuck_sse = reqwest::Client::new()
        .get(format!("{base}/v1/events"))
        .header("accept", "text/event-stream")
        .bearer_auth(reader())
        .send()
        .await
        .expect("stream");
    assert_eq!(stuck_sse.status(), 200);
    let (status, _) = upgrade_status(try_open(&base, "", &reader()).await);
    assert_eq!(status, 429, "both places are taken");
    // More events than the buffers between the server and the clients hold.
    flood(&base, 40).await;
    let started = Instant::now();
    support::eventually(Duration::from_secs(20), "the stuck connections closed", || {
        let base = base.clone();
        async move {
            let (a, b) = (try_open(&base, "", &reader()).await, try_open(&base, "", &reader()).await);
            (matches!(a, Upgrade::Open(..)) && matches!(b, Upgrade::Open(..))).then_some(())
        }
    })
    .await;
    eprintln!("both stuck connections closed {:?} after the flood", started.elapsed());
    drop((stuck_ws, stuck_sse));
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// The figure the issue sets: 200 sockets subscribed to everything that never
/// read, 100,000 events (batches of 100), and one subscriber that reads.
// Its own threads for the reader, so the test's other work does not delay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_that_never_read_cannot_slow_down_one_that_does() {
    let system = System::start().await;
    let (server, base) = dev(&system, &[]).await;
    let admin = client_for(&token("dev", "admin", Duration::from_secs(600)));
    let open_sockets = || {
        let (admin, url) = (admin.clone(), format!("{base}/metrics"));
        async move {
            let text = admin.get(url).send().await.expect("metrics").text().await.expect("text");
            text.lines()
                .find(|l| l.starts_with("events_connections_open{transport=\"ws\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        }
    };

    let mut fast = connect(&base, "", &reader()).await;
    assert_eq!(next_json(&mut fast, WAIT).await["op"], "subscribed");
    let (batches, per_batch) = (1_000, 100);
    let total = batches * per_batch;
    let (progress, mut fast_seen) = tokio::sync::watch::channel(0usize);
    let fast = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        while latencies.len() < total {
            match tokio::time::timeout(WAIT, futures::StreamExt::next(&mut fast)).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let event: Value = serde_json::from_str(text.as_str()).expect("json");
                    let at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().expect("at")).expect("time");
                    latencies.push(now_ms() - at.timestamp_millis());
                    progress.send_replace(latencies.len());
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    panic!("the reader was closed after {}: {frame:?}", latencies.len())
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the reader stopped after {} events: {other:?}", latencies.len()),
            }
        }
        latencies
    });

    // The ones that never read come in waves, 25 every 10,000 events over the first
    // 80,000, so some are always filling their queues while the events flow.
    let writer = writer();
    let batch = json!({"jobs": vec![json!({"type": "noop", "delay_ms": LATER}); per_batch]});
    let mut stuck = Vec::new();
    let (mut baseline, mut peak) = (0, 0);
    for n in 0..batches {
        if n % 100 == 0 && n < 800 {
            for _ in 0..25 {
                stuck.push(stuck_socket(&base, "").await);
            }
        }
        let response = writer.post(format!("{base}/v1/jobs/batch")).json(&batch).send().await.expect("sent");
        assert_eq!(response.status(), 202);
        if n == 100 {
            baseline = rss(server.pid());
        }
        if n % 10 == 0 {
            peak = peak.max(rss(server.pid()));
        }
        // Paced by the reader, so it is never slow itself.
        let seen = (n + 1) * per_batch;
        tokio::time::timeout(WAIT, fast_seen.wait_for(|got| *got >= seen)).await.expect("keeps up").ok();
    }
    let mut latencies = fast.await.expect("reader");
    latencies.sort_unstable();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    eprintln!(
        "delivery to the reader: p50 {} ms, p99 {} ms, max {} ms; server RSS {:.1} MiB after 10,000 events, \
         peak {:.1} MiB (+{:.1}) over the next 90,000 with {} sockets that never read",
        p(0.5),
        p(0.99),
        latencies.last().unwrap(),
        mib(baseline),
        mib(peak),
        mib(peak.saturating_sub(baseline)),
        stuck.len()
    );
    assert!(p(0.99) < 50, "p99 {} ms", p(0.99));
    // Each stuck socket holds at most WS_BUFFER (8,192) references in its queue and
    // what its socket buffers took, and is then closed: no growth with the events.
    assert!(peak.saturating_sub(baseline) < 64 * 1_048_576, "grew by {:.1} MiB", mib(peak - baseline));
    // Each was closed once its queue filled: the last wave's too (30,000 events
    // ago), while this test still holds them; the reader is gone too.
    support::eventually(WAIT, "the stuck sockets closed", || {
        let open = open_sockets();
        async move { (open.await == 0).then_some(()) }
    })
    .await;
    drop(stuck);
}
