//! The seven attacks of the hostile-tenant workload, each by tenant `attacker`
//! over loopback and bounded in requests and in time. `prepare` does what an
//! attack needs before the victim starts (jobs queued or failed, a long event
//! stream); `run` attacks until the phase ends. Both tally every answer by
//! status and error code, which names the limit that stopped the attacker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, client_async_with_config};

use super::{Attack, Tally};
use crate::events_client::{self, Socket};
use crate::workloads::keys;

/// Jobs per batch of the queue-name, far-future and long-job attacks (the API's largest).
const BATCH: usize = 1_000;
/// Batches the queue-name flood sends.
const QUEUE_FLOOD_BATCHES: u64 = 20;
/// A byte-flood job's payload, bytes of JSON (under MAX_PAYLOAD_BYTES, 64 KiB).
const BIG_PAYLOAD: usize = 60 * 1024;
/// Byte-flood jobs per batch: 15 × 60 KiB stays under MAX_BODY_BYTES (1 MiB).
const BIG_BATCH: usize = 15;
/// Most requests of one flood, whatever the time left.
const MAX_REQUESTS: u64 = 200_000;
/// Requests in flight at once in the byte and far-future floods.
const LANES: usize = 4;
/// The long-job attack: `sleep` jobs of this many ms.
const LONG_JOBS: usize = 5_000;
const LONG_JOB_MS: u64 = 50;
/// Non-reading sockets opened, and the attacker's job rate meanwhile.
const SLOW_SOCKETS: usize = 200;
const SLOW_SOCKET_JOBS_PER_SEC: u64 = 200;
/// A non-reading socket's receive buffer: small, so the server's queue fills soon.
const SLOW_SOCKET_RCVBUF: u32 = 4 * 1024;
/// Replaying sockets at once, the `since` they all send, and the most opens in all.
const REPLAYERS: usize = 50;
const REPLAY_SINCE: &str = "0-0:0";
const MAX_REPLAYS: u64 = 100_000;
/// A replay is read until it goes quiet this long, or for at most `REPLAY_READ`.
const REPLAY_IDLE: Duration = Duration::from_millis(200);
const REPLAY_READ: Duration = Duration::from_secs(2);
/// Jobs the replay flood first puts through, so the stream has something to replay.
const REPLAY_PREFILL_JOBS: usize = 5_000;
/// `fail` jobs the retry-failed loop first fails, and the most each call retries.
const FAILED_JOBS: usize = 2_000;
const RETRY_LIMIT: u32 = 1_000;
/// How long preparation may wait for the worker.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and as whom the attacker sends.
pub struct Attacker<'a> {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub base: &'a str,
    pub token: &'a str,
    pub tenant: &'a str,
    /// The queue the victim's jobs go to.
    pub victim_queue: &'a str,
    pub redis: redis::aio::MultiplexedConnection,
}

impl Attacker<'_> {
    /// Work done before the victim starts, tallied apart from the attack.
    pub async fn prepare(&mut self, attack: Attack) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        match attack {
            Attack::LongJobs => {
                let job = json!({ "type": "sleep", "payload": { "ms": LONG_JOB_MS } });
                self.batches(&mut tally, &job, LONG_JOBS).await?;
            }
            Attack::ReplayFlood => {
                self.batches(&mut tally, &json!({ "type": "noop" }), REPLAY_PREFILL_JOBS).await?;
                self.wait_for_count("succeeded", REPLAY_PREFILL_JOBS).await?;
            }
            Attack::RetryFailedLoop => {
                let job = json!({ "type": "fail", "payload": { "times": 1000, "permanent": true }, "max_attempts": 1 });
                self.batches(&mut tally, &job, FAILED_JOBS).await?;
                self.wait_for_count("failed", FAILED_JOBS).await?;
            }
            _ => {}
        }
        Ok(tally)
    }

    /// Attacks until `until`.
    pub async fn run(&self, attack: Attack, until: Instant) -> Tally {
        let mut tally = Tally::default();
        match attack {
            Attack::QueueNameFlood => {
                let body = |n: u64| {
                    let jobs: Vec<Value> = (0..BATCH as u64)
                        .map(|i| json!({ "type": "noop", "queue": format!("q-{}", n * BATCH as u64 + i) }))
                        .collect();
                    json!({ "jobs": jobs }).to_string()
                };
                self.flood(&mut tally, 1, until, QUEUE_FLOOD_BATCHES, &body, |_| false).await;
            }
            Attack::ByteFlood => {
                let job = big_job();
                // Serialised once: the attacker's own CPU is the API's (one core).
                let batch = json!({ "jobs": vec![job; BIG_BATCH] }).to_string();
                let refused = |key: &str| key != "202" && key != "429 rate_limited";
                self.flood(&mut tally, LANES, until, MAX_REQUESTS, &|_| batch.clone(), refused).await;
            }
            Attack::FarFutureFlood => {
                let year_ms: u64 = 365 * 24 * 3600 * 1000;
                let batch = json!({ "jobs": vec![json!({ "type": "noop", "delay_ms": year_ms }); BATCH] }).to_string();
                self.flood(&mut tally, LANES, until, MAX_REQUESTS, &|_| batch.clone(), |_| false).await;
            }
            Attack::LongJobs => {}
            Attack::NonReadingSockets => self.slow_sockets(&mut tally, until).await,
            Attack::ReplayFlood => self.replays(&mut tally, until).await,
            Attack::RetryFailedLoop => self.retry_failed(&mut tally, until).await,
        }
        tally
    }

    /// Submits `total` copies of `job` in batches of [`BATCH`], one after another.
    async fn batches(&self, tally: &mut Tally, job: &Value, total: usize) -> anyhow::Result<()> {
        for start in (0..total).step_by(BATCH) {
            let jobs = vec![job.clone(); BATCH.min(total - start)];
            let (key, _) = self.post("/v1/jobs/batch", json!({ "jobs": jobs }).to_string()).await;
            anyhow::ensure!(key == "202", "preparing the attack: a batch got {key}");
            tally.count(key);
        }
        Ok(())
    }

    /// Waits until `count` of the attacker's jobs on the victim's queue have `status`.
    async fn wait_for_count(&mut self, status: &str, count: usize) -> anyhow::Result<()> {
        let key = keys().tenant_counts(self.tenant);
        let field = format!("{}\t{status}", self.victim_queue);
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        loop {
            let have: Option<u64> = redis::cmd("HGET").arg(&key).arg(&field).query_async(&mut self.redis).await?;
            if have.unwrap_or(0) >= count as u64 {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{count} attacker jobs not {status} within {PREPARE_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /v1/jobs/batch` with `body(n)` for n = 0, 1, … from `lanes` lanes, as
    /// fast as answered, until `until`, `max` requests, or an answer `stop` names.
    async fn flood(
        &self,
        tally: &mut Tally,
        lanes: usize,
        until: Instant,
        max: u64,
        body: &(dyn Fn(u64) -> String + Sync),
        stop: impl Fn(&str) -> bool + Sync,
    ) {
        let next = AtomicU64::new(0);
        let stopped = AtomicBool::new(false);
        let lane = || async {
            let mut mine = Tally::default();
            while Instant::now() < until && !stopped.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let (key, answer) = self.post("/v1/jobs/batch", body(n)).await;
                if let Some(ids) = answer.as_ref().and_then(|a| a["ids"].as_array()) {
                    mine.add("jobs accepted", ids.len() as u64);
                }
                if stop(&key) {
                    stopped.store(true, Ordering::Relaxed);
                }
                mine.count(key);
            }
            mine
        };
        for mine in futures::future::join_all((0..lanes.max(1)).map(|_| lane())).await {
            tally.merge(mine);
        }
    }

    /// 200 sockets on `/v1/events` (every job of the tenant) that never read,
    /// while the attacker submits 200 jobs a second so events flow; at the end,
    /// each socket's fate: closed by the server (with its code) or still open.
    async fn slow_sockets(&self, tally: &mut Tally, until: Instant) {
        let opens = (0..SLOW_SOCKETS).map(|_| self.open_socket("", Some(SLOW_SOCKET_RCVBUF)));
        let mut sockets = Vec::new();
        for opened in futures::future::join_all(opens).await {
            match opened {
                Ok(socket) => {
                    tally.count("ws 101".into());
                    sockets.push(socket);
                }
                Err(key) => tally.count(key),
            }
        }
        // Ten jobs every 50 ms.
        let per_tick = SLOW_SOCKET_JOBS_PER_SEC / 20;
        let batch = json!({ "jobs": vec![json!({ "type": "noop" }); per_tick as usize] }).to_string();
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        while Instant::now() < until {
            ticks.tick().await;
            let (key, _) = self.post("/v1/jobs/batch", batch.clone()).await;
            tally.count(format!("jobs batch {key}"));
        }
        let (unsent, unread) = queued_bytes(self.base);
        tally.add("KiB sent by the API, unacknowledged", unsent / 1024);
        tally.add("KiB received by the sockets, unread", unread / 1024);
        for fate in futures::future::join_all(sockets.into_iter().map(fate)).await {
            tally.count(fate);
        }
    }

    /// 50 lanes, each opening `/v1/events?since=0-0:0`, reading the replay until it
    /// goes quiet, closing, and opening again, until `until`.
    async fn replays(&self, tally: &mut Tally, until: Instant) {
        let opens = AtomicU64::new(0);
        let query = format!("since={REPLAY_SINCE}");
        let lane = || async {
            let mut mine = Tally::default();
            while Instant::now() < until && opens.fetch_add(1, Ordering::Relaxed) < MAX_REPLAYS {
                match self.open_socket(&query, None).await {
                    Ok(mut socket) => {
                        mine.count("ws 101".into());
                        let (messages, closed) = read_replay(&mut socket).await;
                        mine.add("replay messages read", messages);
                        match closed {
                            Some(code) => mine.count(format!("ws closed {code}")),
                            None => events_client::close(socket).await,
                        }
                    }
                    Err(key) => {
                        mine.count(key);
                        // A refused client retries at once, short of a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            mine
        };
        for mine in futures::future::join_all((0..REPLAYERS).map(|_| lane())).await {
            tally.merge(mine);
        }
    }

    /// `POST /v1/queues/{queue}/retry-failed?limit=1000` in a loop until `until`.
    async fn retry_failed(&self, tally: &mut Tally, until: Instant) {
        let path = format!("/v1/queues/{}/retry-failed?limit={RETRY_LIMIT}", self.victim_queue);
        let mut calls = 0;
        while Instant::now() < until && calls < MAX_REQUESTS {
            calls += 1;
            let (key, answer) = self.post(&path, "{}".to_owned()).await;
            if let Some(retried) = answer.as_ref().and_then(|a| a["retried"].as_u64()) {
                tally.add("jobs retried", retried);
            }
            tally.count(key);
        }
    }

    /// POSTs `body` and names the answer: `202`, `429 rate_limited`, …
    async fn post(&self, path: &str, body: String) -> (String, Option<Value>) {
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) if err.is_timeout() => return ("transport timeout".into(), None),
            Err(_) => return ("transport error".into(), None),
        };
        let status = response.status().as_u16();
        let answer: Option<Value> = response.json().await.ok();
        (answer_key(status, answer.as_ref()), answer)
    }

    /// Opens `/v1/events?<query>&access_token=…`; a refusal comes back as its key
    /// (`ws 429 too_many_connections`).
    async fn open_socket(&self, query: &str, rcvbuf: Option<u32>) -> Result<Socket, String> {
        let opened = async {
            let authority = self.base.strip_prefix("http://").context("the API base is not http://")?;
            let tcp = TcpSocket::new_v4()?;
            if let Some(size) = rcvbuf {
                tcp.set_recv_buffer_size(size)?;
            }
            let stream = tcp.connect(authority.parse()?).await?;
            let sep = if query.is_empty() { "" } else { "&" };
            let url = format!("ws://{authority}/v1/events?{query}{sep}access_token={}", self.token);
            anyhow::Ok(client_async_with_config(url.into_client_request()?, MaybeTlsStream::Plain(stream), None).await)
        };
        match tokio::time::timeout(Duration::from_secs(10), opened).await {
            Err(_) => Err("ws open timeout".into()),
            Ok(Err(_)) => Err("ws connect error".into()),
            Ok(Ok(Ok((socket, _)))) => Ok(socket),
            Ok(Ok(Err(tungstenite::Error::Http(response)))) => {
                let answer = response.body().as_deref().and_then(|body| serde_json::from_slice::<Value>(body).ok());
                Err(format!("ws {}", answer_key(response.status().as_u16(), answer.as_ref())))
            }
            Ok(Ok(Err(_))) => Err("ws upgrade error".into()),
        }
    }
}

/// `status` alone for a success, `status code` for an error body with a `code`.
fn answer_key(status: u16, answer: Option<&Value>) -> String {
    match answer.and_then(|a| a["code"].as_str()) {
        Some(code) if status >= 400 => format!("{status} {code}"),
        _ => status.to_string(),
    }
}

/// An `email.send` job with a ~60 KiB text, due in a day: it stays stored. (`noop`
/// takes no field a payload could be padded with.)
fn big_job() -> Value {
    let text = "x".repeat(BIG_PAYLOAD - 100);
    json!({
        "type": "email.send",
        "payload": { "to": "sink@example.org", "subject": "bytes", "text": text },
        "delay_ms": 24 * 3600 * 1000,
    })
}

/// Bytes the kernel holds on the API's loopback connections (`ss`): sent by
/// the API and not yet acknowledged (its Send-Q), and received by the peers
/// but not read (their Recv-Q). (0, 0) if `ss` is not there.
fn queued_bytes(base: &str) -> (u64, u64) {
    let Some(port) = base.rsplit(':').next() else { return (0, 0) };
    let suffix = format!(":{port}");
    let Ok(out) = std::process::Command::new("ss").args(["-tnH", "state", "established"]).output() else {
        return (0, 0);
    };
    let (mut unsent, mut unread) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [recv_q, send_q, local, peer, ..] = fields[..] else { continue };
        if local.ends_with(&suffix) {
            unsent += send_q.parse::<u64>().unwrap_or(0);
        } else if peer.ends_with(&suffix) {
            unread += recv_q.parse::<u64>().unwrap_or(0);
        }
    }
    (unsent, unread)
}

/// What became of a socket that was never read: drained now, it ends with the
/// server's close frame, ends without one, or stays open.
async fn fate(mut socket: Socket) -> String {
    let drained = async {
        loop {
            match tokio::time::timeout(Duration::from_millis(500), socket.next()).await {
                Err(_) => return "ws still open".to_owned(),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return format!("ws closed {}", events_client::close_code(frame.as_ref()));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return "ws closed without a close frame".to_owned(),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drained).await.unwrap_or_else(|_| "ws still open (draining)".into())
}

/// Reads a replay until it goes quiet or [`REPLAY_READ`] passes: messages read,
/// and the close code if the server closed the socket.
async fn read_replay(socket: &mut Socket) -> (u64, Option<u16>) {
    let deadline = Instant::now() + REPLAY_READ;
    let mut messages = 0;
    while Instant::now() < deadline {
        match tokio::time::timeout(REPLAY_IDLE, socket.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(_)))) => messages += 1,
            Ok(Some(Ok(Message::Close(frame)))) => return (messages, Some(events_client::close_code(frame.as_ref()))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (messages, Some(events_client::ABNORMAL_CLOSE)),
        }
    }
    (messages, None)
}
