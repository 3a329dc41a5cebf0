//! Clients for `GET /v1/events`: a real WebSocket client (tokio-tungstenite),
//! a raw one that never answers pings, an SSE reader, and hand-made tokens for
//! the auth matrix.

use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TEST_SECRET;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `ws://host/v1/events?query`.
pub fn events_url(base: &str, query: &str) -> String {
    let base = base.replacen("http://", "ws://", 1);
    if query.is_empty() { format!("{base}/v1/events") } else { format!("{base}/v1/events?{query}") }
}

/// How an upgrade attempt ended.
pub enum Upgrade {
    Open(Box<Socket>, Box<tungstenite::http::Response<Option<Vec<u8>>>>),
    Refused(u16, Value),
}

impl Upgrade {
    pub fn open(self) -> Socket {
        match self {
            Self::Open(socket, _) => *socket,
            Self::Refused(status, body) => panic!("upgrade refused: {status} {body}"),
        }
    }

    pub fn refused(self) -> (u16, Value) {
        match self {
            Self::Open(_, _) => panic!("the upgrade was accepted"),
            Self::Refused(status, body) => (status, body),
        }
    }
}

/// Opens `/v1/events?query` with these extra headers.
pub async fn upgrade(base: &str, query: &str, headers: &[(&str, &str)]) -> Upgrade {
    let mut request = events_url(base, query).into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("the upgrade did not answer within 10 s"),
        Ok(Ok((socket, response))) => Upgrade::Open(Box::new(socket), Box::new(response)),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
            Upgrade::Refused(response.status().as_u16(), body)
        }
        Ok(Err(err)) => panic!("upgrade failed: {err}"),
    }
}

/// Opens a socket with `Authorization: Bearer <token>`.
pub async fn connect(base: &str, query: &str, token: &str) -> Socket {
    upgrade(base, query, &[("authorization", &format!("Bearer {token}"))]).await.open()
}

/// The next JSON message (pings skipped); fails the test at `within` or on close.
pub async fn next_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {within:?}"));
        match message {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).expect("JSON message"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Reads messages until `done` holds for one; returns them all (that one included).
pub async fn read_until(socket: &mut Socket, within: Duration, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_json(socket, left).await;
        let stop = done(&message);
        seen.push(message);
        if stop {
            return seen;
        }
    }
}

/// Waits for the server's close frame, skipping other messages; returns its code, reason
/// and how many messages came before it.
pub async fn close_code(socket: &mut Socket, within: Duration) -> (u16, String, usize) {
    let deadline = tokio::time::Instant::now() + within;
    let mut before = 0;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("not closed within {within:?}"));
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string(), before),
            Some(Ok(Message::Close(None))) => return (1005, String::new(), before),
            Some(Ok(Message::Text(_))) => before += 1,
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

pub async fn send_json(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.expect("sent");
}

/// A token with exactly these claims, signed with [`TEST_SECRET`] (HS256).
pub fn signed(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("token")
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", base64url(claims.to_string().as_bytes()))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A WebSocket client that does the handshake by hand and never answers a ping:
/// returns the pings it saw and the close code, once the server closes.
pub async fn deaf_client(base: String, token: String, within: Duration) -> (usize, u16, String) {
    let addr = base.trim_start_matches("http://").to_owned();
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let request = format!(
        "GET /v1/events?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("handshake sent");
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    // The response head.
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await.expect("handshake answer").expect("read");
        assert!(n > 0, "closed during the handshake");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    buffer.drain(..head_end);
    let mut pings = 0;
    loop {
        // Server frames are unmasked: opcode, length (7 bits, or 16 / 64 bits), payload.
        while buffer.len() >= 2 {
            let opcode = buffer[0] & 0x0f;
            let (len, start) = match buffer[1] & 0x7f {
                126 if buffer.len() >= 4 => (usize::from(u16::from_be_bytes([buffer[2], buffer[3]])), 4),
                127 if buffer.len() >= 10 => {
                    (u64::from_be_bytes(buffer[2..10].try_into().expect("8 bytes")) as usize, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if buffer.len() < start + len {
                break;
            }
            let payload: Vec<u8> = buffer[start..start + len].to_vec();
            buffer.drain(..start + len);
            match opcode {
                0x9 => pings += 1,
                0x8 => {
                    let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    return (pings, code, String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).to_string());
                }
                _ => {}
            }
        }
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no close within {within:?} ({pings} pings)"))
            .expect("read");
        assert!(n > 0, "the server dropped the connection without a close frame ({pings} pings)");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// Reads an event stream, event by event.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(url: &str, token: &str, headers: &[(&str, &str)]) -> Result<Self, (u16, Value)> {
        let mut request = reqwest::Client::new().get(url).header("accept", "text/event-stream");
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        Ok(Self { response, buffer: String::new() })
    }

    /// The next event (keep-alive comments skipped), within `within`.
    pub async fn next(&mut self, within: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("data:") {
                        event.data.push_str(value.trim_start());
                        any = true;
                    } else if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim_start().to_owned());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = Some(value.trim_start().to_owned());
                    }
                }
                if any {
                    return event;
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"))
                .expect("stream read")
                .unwrap_or_else(|| panic!("the stream ended"));
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// `jobs dev` as a process (the API and a worker) on `system`'s Redis and prefix.
pub fn dev_server(system: &super::System, env: &[(&str, &str)]) -> super::WorkerProcess {
    // Only the jobs package's tests have it (this harness is shared with them).
    let Some(binary) = option_env!("CARGO_BIN_EXE_jobs") else { panic!("`jobs dev` is for the jobs package's tests") };
    let mut command = std::process::Command::new(binary);
    command
        .arg("dev")
        .env("REDIS_URL", system.redis.url())
        .env("REDIS_PREFIX", &system.prefix)
        .env("LEASE_SECS", super::TEST_LEASE_SECS.to_string())
        .env("SMTP_URL", system.smtp.url())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    super::WorkerProcess { child: command.spawn().expect("worker binary starts") }
}
