//! `GET /v1/events` over WebSocket, with a real client (tokio-tungstenite)
//! against the real server and Redis: authentication before the upgrade,
//! snapshots, resume, gaps, several API instances, heartbeats,
//! many sockets, shutdown.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::events::*;
use support::{System, TENANT, client_for, token};

const READ: &str = "jobs:read";
const WAIT: Duration = Duration::from_secs(10);

fn reader() -> String {
    token(TENANT, READ, Duration::from_secs(3600))
}

/// Reads until the `subscribed` acknowledgement; returns what came before and it.
async fn subscribed(socket: &mut Socket) -> Value {
    let seen = read_until(socket, WAIT, |m| m["op"] == "subscribed").await;
    seen.last().cloned().expect("acknowledged")
}

async fn submit_as(system: &System, token: &str, body: Value) -> String {
    let response = client_for(token).post(system.url("/v1/jobs")).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 202);
    let record: Value = response.json().await.expect("record");
    record["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn no_bad_token_or_foreign_origin_gets_an_open_socket() {
    let system = System::start_with(|c| c.events.allowed_origins = vec!["https://ops.example.test".into()]).await;
    let now = now_secs();
    let claims = |exp: u64| json!({"sub": "t", "tenant": TENANT, "scope": READ, "exp": exp});
    let forged = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"another secret, also thirty-two bytes long");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims(now + 600), &key).expect("token")
    };
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16);
    let cases: Vec<Case> = vec![
        ("no token", vec![], 401),
        ("expired", vec![("authorization", format!("Bearer {}", signed(&claims(now - 5))))], 401),
        ("forged signature", vec![("authorization", format!("Bearer {forged}"))], 401),
        ("alg none", vec![("authorization", format!("Bearer {}", unsigned(&claims(now + 600))))], 401),
        ("garbage", vec![("authorization", "Bearer not.a.token".into())], 401),
        ("write scope only", vec![("authorization", format!("Bearer {}", token(TENANT, "jobs:write", WAIT)))], 403),
        (
            "foreign origin",
            vec![("authorization", format!("Bearer {}", reader())), ("origin", "https://evil.test".into())],
            403,
        ),
        ("null origin", vec![("authorization", format!("Bearer {}", reader())), ("origin", "null".into())], 403),
    ];
    for (case, headers, expected) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, body) = upgrade(&system.base, "", &headers).await.refused();
        assert_eq!(status, expected, "{case}: {body}");
        assert_eq!(body["code"], if expected == 401 { "unauthorized" } else { "forbidden" }, "{case}");
    }
    // The same bad tokens through the query string and the subprotocol.
    for bad in [signed(&claims(now - 5)), forged.clone(), unsigned(&claims(now + 600))] {
        let (status, _) = upgrade(&system.base, &format!("access_token={bad}"), &[]).await.refused();
        assert_eq!(status, 401);
        let protocols = format!("bearer, {bad}");
        let (status, _) = upgrade(&system.base, "", &[("sec-websocket-protocol", &protocols)]).await.refused();
        assert_eq!(status, 401);
    }
    // The API's own origin and an allowed one are fine.
    let own = system.base.clone();
    let bearer = format!("Bearer {}", reader());
    for origin in [own.as_str(), "https://ops.example.test"] {
        let mut socket = upgrade(&system.base, "", &[("authorization", &bearer), ("origin", origin)]).await.open();
        assert_eq!(subscribed(&mut socket).await["all"], true, "{origin}");
    }
}

#[tokio::test]
async fn a_wrong_issuer_or_audience_is_refused() {
    let system = System::start_with(|c| {
        c.auth.jwt_issuer = Some("https://issuer.test".into());
        c.auth.jwt_audience = Some("jobs-api".into());
    })
    .await;
    let exp = now_secs() + 600;
    let base = json!({"sub": "t", "tenant": TENANT, "scope": READ, "exp": exp});
    let with = |iss: &str, aud: &str| {
        let mut claims = base.clone();
        claims["iss"] = json!(iss);
        claims["aud"] = json!(aud);
        signed(&claims)
    };
    for (case, token, expected) in [
        ("wrong issuer", with("https://other.test", "jobs-api"), 401),
        ("wrong audience", with("https://issuer.test", "other-api"), 401),
        ("no issuer or audience at all", signed(&base), 401),
    ] {
        let (status, _) = upgrade(&system.base, &format!("access_token={token}"), &[]).await.refused();
        assert_eq!(status, expected, "{case}");
    }
    let good = with("https://issuer.test", "jobs-api");
    let mut socket = connect(&system.base, "", &good).await;
    assert_eq!(subscribed(&mut socket).await["op"], "subscribed");
}

#[tokio::test]
async fn the_token_works_from_the_header_the_query_and_the_subprotocol() {
    let system = System::start().await;
    let token = reader();
    let mut header = connect(&system.base, "", &token).await;
    let mut query = upgrade(&system.base, &format!("access_token={token}"), &[]).await.open();
    let protocols = format!("bearer, {token}");
    let Upgrade::Open(mut protocol, response) =
        upgrade(&system.base, "", &[("sec-websocket-protocol", &protocols)]).await
    else {
        panic!("subprotocol refused")
    };
    // The server selects `bearer` and never echoes the token.
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    for socket in [&mut header, &mut query, &mut *protocol] {
        subscribed(socket).await;
    }
    let id = system.submit(json!({"type": "noop"})).await;
    for socket in [&mut header, &mut query, &mut *protocol] {
        let event = next_json(socket, WAIT).await;
        assert_eq!((event["op"].as_str(), event["job_id"].as_str()), (Some("event"), Some(id.as_str())));
        assert_eq!(event["status"], "queued");
        assert_eq!(event["type"], "noop");
        assert!(event.get("tenant").is_none() && event.get("error").is_none(), "{event}");
    }
}

#[tokio::test]
async fn another_tenants_job_is_not_found_and_none_of_its_events_arrive() {
    let system = System::start().await;
    let _worker = system.spawn_worker();
    let theirs = system.submit(json!({"type": "sleep", "payload": {"ms": 200}})).await;
    let intruder = token("intruder", "jobs:read jobs:write", Duration::from_secs(3600));
    let mut socket = connect(&system.base, &format!("job={theirs}"), &intruder).await;
    let first = next_json(&mut socket, WAIT).await;
    assert_eq!((first["op"].as_str(), first["code"].as_str()), (Some("error"), Some("not_found")), "{first}");
    assert_eq!(next_json(&mut socket, WAIT).await, json!({"op": "subscribed", "jobs": [], "queues": [], "all": false}));
    // Same answer as for an id that never existed.
    send_json(&mut socket, json!({"op": "subscribe", "jobs": ["00000000-0000-0000-0000-000000000000"]})).await;
    let unknown = next_json(&mut socket, WAIT).await;
    assert_eq!(unknown["code"], "not_found");
    subscribed(&mut socket).await;
    assert_eq!(
        unknown["message"].as_str().map(|m| m.replace("00000000-0000-0000-0000-000000000000", theirs.as_str())),
        first["message"].as_str().map(str::to_owned)
    );
    // Listen to everything the token may see, let their job finish, then a marker of ours.
    send_json(&mut socket, json!({"op": "subscribe"})).await;
    subscribed(&mut socket).await;
    system.wait_for_status(&theirs, "succeeded", WAIT).await;
    let marker = submit_as(&system, &intruder, json!({"type": "noop", "delay_ms": 60_000})).await;
    let seen = read_until(&mut socket, WAIT, |m| m["job_id"] == marker.as_str()).await;
    assert!(seen.iter().all(|m| m["job_id"] == marker.as_str()), "foreign events leaked: {seen:?}");
}

#[tokio::test]
async fn a_socket_is_closed_with_1008_when_its_token_expires() {
    let system = System::start().await;
    let short = token(TENANT, READ, Duration::from_secs(2));
    let exp = now_secs() + 2;
    let mut socket = connect(&system.base, "", &short).await;
    let (code, reason, _) = close_code(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1008, "{reason}");
    let closed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(closed_at <= exp as f64 + 1.5, "closed {:.2} s after expiry", closed_at - exp as f64);
}

#[tokio::test]
async fn a_job_subscriber_gets_a_snapshot_then_every_later_transition() {
    let system = System::start().await;
    let _worker = system.spawn_worker();
    let order = ["queued", "running", "succeeded"];
    // Subscribe at various moments around each job's short life.
    for round in 0..12u64 {
        let id = system.submit(json!({"type": "sleep", "payload": {"ms": 30}})).await;
        tokio::time::sleep(Duration::from_millis(round * 7)).await;
        let mut socket = connect(&system.base, &format!("job={id}"), &reader()).await;
        let ack = next_json(&mut socket, WAIT).await;
        assert_eq!(ack["jobs"], json!([id]), "{ack}");
        let snapshot = next_json(&mut socket, WAIT).await;
        assert_eq!(snapshot["op"], "snapshot", "{snapshot}");
        assert_eq!(snapshot["job"]["id"], id.as_str());
        let fields = |v: &Value| v.as_object().expect("object").keys().cloned().collect::<BTreeSet<_>>();
        let mut read = fields(&system.job(&id).await);
        read.remove("payload");
        assert_eq!(fields(&snapshot["job"]), read, "the record as GET /v1/jobs/{{id}} has it, but for the payload");
        let as_of = snapshot["id"].as_str().expect("snapshot id").to_owned();
        let mut statuses = vec![snapshot["job"]["status"].as_str().expect("status").to_owned()];
        while statuses.last().map(String::as_str) != Some("succeeded") {
            let event = next_json(&mut socket, WAIT).await;
            assert_eq!(event["op"], "event", "{event}");
            assert!(newer(event["id"].as_str().unwrap(), &as_of), "{event} is not after the snapshot {as_of}");
            statuses.push(event["status"].as_str().expect("status").to_owned());
        }
        let start = order.iter().position(|s| *s == statuses[0]).expect("known status");
        assert_eq!(statuses, order[start..], "round {round}: no transition missed or repeated");
    }
}

/// Event ids order as (ms, seq, line).
fn key(id: &str) -> (u64, u64, u32) {
    let (entry, line) = id.split_once(':').expect("event id");
    let (ms, seq) = entry.split_once('-').expect("entry id");
    (ms.parse().unwrap(), seq.parse().unwrap(), line.parse().unwrap())
}

fn newer(id: &str, than: &str) -> bool {
    key(id) > key(than)
}

#[tokio::test]
async fn a_subscriber_resumes_with_since_without_a_gap_or_a_duplicate() {
    let system = System::start().await;
    let mut socket = connect(&system.base, "", &reader()).await;
    subscribed(&mut socket).await;
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(system.submit(json!({"type": "noop", "delay_ms": 60_000})).await);
    }
    let seen = read_until(&mut socket, WAIT, |m| m["job_id"] == before[4].as_str()).await;
    let last = seen.last().expect("event")["id"].as_str().expect("id").to_owned();
    drop(socket);

    let mut expected = Vec::new();
    for _ in 0..10 {
        expected.push(system.submit(json!({"type": "noop", "delay_ms": 60_000})).await);
    }
    // More jobs while the replay runs, to cross the seam.
    let writer = {
        let (base, token) = (system.base.clone(), token(TENANT, "jobs:write", Duration::from_secs(600)));
        tokio::spawn(async move {
            let client = client_for(&token);
            let mut ids = Vec::new();
            for _ in 0..20 {
                let response = client
                    .post(format!("{base}/v1/jobs"))
                    .json(&json!({"type": "noop", "delay_ms": 60_000}))
                    .send()
                    .await;
                let record: Value = response.expect("sent").json().await.expect("record");
                ids.push(record["id"].as_str().expect("id").to_owned());
            }
            ids
        })
    };
    let mut socket = connect(&system.base, &format!("since={last}"), &reader()).await;
    let ack = next_json(&mut socket, WAIT).await;
    assert_eq!(ack["op"], "subscribed");
    expected.extend(writer.await.expect("writer"));
    let final_id = expected.last().cloned().expect("jobs");
    let events = read_until(&mut socket, WAIT, |m| m["job_id"] == final_id.as_str()).await;
    let got: Vec<&str> = events.iter().map(|m| m["job_id"].as_str().expect("job id")).collect();
    assert_eq!(
        got,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "every event after `since`, once, in order"
    );
    let ids: Vec<&str> = events.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert!(ids.windows(2).all(|w| newer(w[1], w[0])) && newer(ids[0], &last));
}

#[tokio::test]
async fn a_trimmed_since_gets_a_gap_then_the_oldest_kept_events() {
    let system = System::start_with(|c| c.retention.events_maxlen = 100).await;
    let mut socket = connect(&system.base, "", &reader()).await;
    subscribed(&mut socket).await;
    let first = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    let event = next_json(&mut socket, WAIT).await;
    assert_eq!(event["job_id"], first.as_str());
    let since = event["id"].as_str().expect("id").to_owned();
    drop(socket);
    // One stream entry per submission: enough for `MAXLEN ~ 100` to drop the first nodes.
    let mut conn = system.redis_conn().await;
    let stream = format!("{{{}}}:events", system.prefix);
    let mut submitted = 1;
    loop {
        let oldest: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        if key(&format!("{}:0", oldest[0].0)) > key(&since) {
            break;
        }
        assert!(submitted < 2_000, "the stream was never trimmed");
        system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
        submitted += 1;
    }
    let oldest: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1).query_async(&mut conn).await.unwrap();
    let mut socket = connect(&system.base, &format!("since={since}"), &reader()).await;
    assert_eq!(next_json(&mut socket, WAIT).await["op"], "subscribed");
    let gap = next_json(&mut socket, WAIT).await;
    assert_eq!(gap, json!({"op": "gap", "since": since, "oldest": format!("{}:0", oldest[0].0)}));
    let replayed = next_json(&mut socket, WAIT).await;
    assert_eq!(replayed["id"], format!("{}:0", oldest[0].0), "the replay starts at the oldest kept event");
}

#[tokio::test]
async fn two_api_instances_both_deliver_every_event() {
    let system = System::start().await;
    let other = system.start_another_api().await;
    let mut here = connect(&system.base, "", &reader()).await;
    let mut there = connect(&other, "", &reader()).await;
    subscribed(&mut here).await;
    subscribed(&mut there).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        // Submitted through both instances.
        let base = if i % 2 == 0 { &system.base } else { &other };
        let response =
            system.http.post(format!("{base}/v1/jobs")).json(&json!({"type": "noop", "delay_ms": 60_000})).send().await;
        let record: Value = response.expect("sent").json().await.expect("record");
        ids.push(record["id"].as_str().expect("id").to_owned());
    }
    for socket in [&mut here, &mut there] {
        let last = ids.last().cloned().unwrap();
        let got: Vec<String> = read_until(socket, WAIT, |m| m["job_id"] == last.as_str())
            .await
            .iter()
            .map(|m| m["job_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, ids);
    }
}

#[tokio::test]
async fn a_client_that_ignores_pings_is_closed_and_one_that_answers_stays() {
    let system = System::start_with(|c| c.events.ws_ping_secs = 1).await;
    let mut answering = connect(&system.base, "", &reader()).await;
    let started = Instant::now();
    let deaf = tokio::spawn(deaf_client(system.base.clone(), reader(), Duration::from_secs(8)));
    // tungstenite answers pings while we read: this one stays open, and pings keep coming.
    let mut seen_pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4_500);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut answering)).await {
        match message.expect("open") {
            tokio_tungstenite::tungstenite::Message::Ping(_) => seen_pings += 1,
            tokio_tungstenite::tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(seen_pings >= 4, "{seen_pings} pings in {:?}", started.elapsed());
    let (pings, code, reason) = deaf.await.expect("deaf client");
    assert_eq!((code, reason.as_str()), (1001, "missed pongs"));
    assert!(pings >= 2, "{pings} pings");
    let id = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    let seen = read_until(&mut answering, WAIT, |m| m["job_id"] == id.as_str()).await;
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn an_inbound_message_over_64_kib_closes_with_1009_and_bad_messages_get_errors() {
    let system = System::start().await;
    let mut socket = connect(&system.base, "", &reader()).await;
    subscribed(&mut socket).await;
    send_json(&mut socket, json!({"op": "dance"})).await;
    assert_eq!(next_json(&mut socket, WAIT).await["code"], "bad_request");
    send_json(&mut socket, json!({"op": "subscribe", "since": "yesterday"})).await;
    assert_eq!(next_json(&mut socket, WAIT).await["code"], "bad_parameter");
    send_json(&mut socket, json!({"op": "subscribe", "queue": "a b"})).await;
    assert_eq!(next_json(&mut socket, WAIT).await["code"], "bad_parameter");
    send_json(&mut socket, json!({"op": "subscribe", "queue": "email"})).await;
    let ack = next_json(&mut socket, WAIT).await;
    assert_eq!(ack, json!({"op": "subscribed", "jobs": [], "queues": ["email"], "all": true}));
    send_json(&mut socket, json!({"op": "unsubscribe"})).await;
    assert_eq!(
        next_json(&mut socket, WAIT).await,
        json!({"op": "subscribed", "jobs": [], "queues": ["email"], "all": false})
    );
    let _ =
        futures::SinkExt::send(&mut socket, tokio_tungstenite::tungstenite::Message::text("x".repeat(65 * 1024))).await;
    let (code, _, _) = close_code(&mut socket, WAIT).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let system = System::start().await;
    let router = api::build(&system.api_config()).await.expect("api builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, router, async move {
        let _ = stopped.await;
    }));
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(&base, "", &reader()).await;
        subscribed(&mut socket).await;
        sockets.push(socket);
    }
    let started = Instant::now();
    stop.send(()).expect("server running");
    for socket in &mut sockets {
        let (code, reason, _) = close_code(socket, Duration::from_secs(5)).await;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").expect("task").expect("ok");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_thousand_sockets_across_tenants_each_get_only_their_tenants_events() {
    let system = System::start().await;
    let tenants = ["t-a", "t-b", "t-c", "t-d"];
    let started = Instant::now();
    let mut opening = tokio::task::JoinSet::new();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    for i in 0..1_000usize {
        let (base, tenant, limit) = (system.base.clone(), tenants[i % tenants.len()], limit.clone());
        opening.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("permit");
            let mut socket = connect(&base, "", &token(tenant, READ, Duration::from_secs(600))).await;
            subscribed(&mut socket).await;
            (tenant, socket)
        });
    }
    let mut sockets = Vec::new();
    while let Some(opened) = opening.join_next().await {
        sockets.push(opened.expect("opened"));
    }
    eprintln!("1,000 sockets open in {:?}", started.elapsed());
    let writers: Vec<String> = tenants.iter().map(|t| token(t, "jobs:write", Duration::from_secs(600))).collect();
    let mut jobs = std::collections::HashMap::new();
    for _round in 0..2 {
        for (tenant, writer) in tenants.iter().zip(&writers) {
            let id = submit_as(&system, writer, json!({"type": "noop", "delay_ms": 60_000})).await;
            jobs.entry(*tenant).or_insert_with(Vec::new).push(id);
        }
    }
    let jobs = std::sync::Arc::new(jobs);
    let mut reading = tokio::task::JoinSet::new();
    for (tenant, mut socket) in sockets {
        let jobs = jobs.clone();
        reading.spawn(async move {
            let own = &jobs[tenant];
            let marker = own.last().cloned().expect("marker");
            let seen = read_until(&mut socket, Duration::from_secs(15), |m| m["job_id"] == marker.as_str()).await;
            let got: Vec<&str> = seen.iter().map(|m| m["job_id"].as_str().expect("job id")).collect();
            assert_eq!(got, own.iter().map(String::as_str).collect::<Vec<_>>(), "{tenant}: exactly its own events");
        });
    }
    while let Some(read) = reading.join_next().await {
        read.expect("socket saw exactly its tenant's events");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

/// Resident memory of a process, in bytes.
#[tokio::test]
async fn the_events_reader_comes_back_after_a_redis_restart() {
    let mut system = System::start().await;
    // Every write reaches the append-only file before the kill, so the restarted Redis
    // holds every event the reader saw (else it closes sockets to resync: see below).
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query_async(&mut system.redis_conn().await)
        .await
        .unwrap();
    let mut socket = connect(&system.base, "", &reader()).await;
    subscribed(&mut socket).await;
    let before = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    read_until(&mut socket, WAIT, |m| m["job_id"] == before.as_str()).await;
    system.redis.kill();
    system.redis.restart();
    // Submissions succeed again once the API's connection is back; the reader follows.
    let after = support::eventually(Duration::from_secs(20), "a submission after the restart", || {
        let http = system.http.clone();
        let url = system.url("/v1/jobs");
        async move {
            let response = http.post(url).json(&json!({"type": "noop", "delay_ms": 60_000})).send().await.ok()?;
            if response.status() != 202 {
                return None;
            }
            let record: Value = response.json().await.ok()?;
            record["id"].as_str().map(str::to_owned)
        }
    })
    .await;
    let seen = read_until(&mut socket, Duration::from_secs(20), |m| m["job_id"] == after.as_str()).await;
    assert!(seen.iter().all(|m| m["op"] == "event"), "{seen:?}");
}

#[tokio::test]
async fn events_trimmed_while_the_reader_was_away_close_its_sockets_to_resume() {
    let system = System::start().await;
    let mut socket = connect(&system.base, "", &reader()).await;
    subscribed(&mut socket).await;
    let first = system.submit(json!({"type": "noop", "delay_ms": 60_000})).await;
    read_until(&mut socket, WAIT, |m| m["job_id"] == first.as_str()).await;
    // In one transaction, so the reader cannot come back in between: its connection
    // dies, and the stream loses an entry it has never read (the first of two added).
    let mut conn = system.redis_conn().await;
    let events = shared::keys::Keys::new(&system.prefix).events();
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").arg("SKIPME").arg("yes").ignore();
    for _ in 0..2 {
        pipe.cmd("XADD").arg(&events).arg("*").arg("e").arg("").ignore();
    }
    pipe.cmd("XTRIM").arg(&events).arg("MAXLEN").arg(1).ignore();
    let () = pipe.query_async(&mut conn).await.unwrap();
    let (code, _, _) = close_code(&mut socket, Duration::from_secs(20)).await;
    assert_eq!(code, 1013, "a client that may have missed events is told to resume");
}

#[tokio::test]
async fn a_client_flooding_the_socket_with_messages_is_closed() {
    let system = System::start().await;
    // A burst of subscribe/unsubscribe messages within the allowance is served.
    let mut calm = connect(&system.base, "", &reader()).await;
    subscribed(&mut calm).await;
    for _ in 0..20 {
        send_json(&mut calm, json!({"op": "subscribe", "queue": "reports"})).await;
    }
    for _ in 0..20 {
        subscribed(&mut calm).await;
    }
    // Hundreds at once are abuse: the socket closes 1008 before they are all answered.
    let mut flood = connect(&system.base, "", &reader()).await;
    subscribed(&mut flood).await;
    for _ in 0..300 {
        send_json(&mut flood, json!({"op": "subscribe", "queue": "reports"})).await;
    }
    let (code, reason, answered) = close_code(&mut flood, WAIT).await;
    assert_eq!((code, reason.as_str()), (1008, "too many messages"));
    assert!(answered < 300, "{answered} messages were answered");
}
