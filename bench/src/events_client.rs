//! A WebSocket client of our `GET /v1/events`, for workloads 4 and 6: it opens
//! a socket with `Authorization: Bearer`, optionally from a chosen loopback
//! source address, waits for the server's `subscribed`, and reads events.
//!
//! Buffers are kept small (the fan-out opens thousands of these in one process),
//! and an event is parsed only as far as the harness needs: its job, status and
//! `at` stamp.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the TCP connect, the upgrade and the `subscribed` answer may take together.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-socket read buffer: events are ~250 bytes, and thousands of sockets share one process.
const READ_BUFFER: usize = 8 * 1024;

/// The close code of an abnormal end (no close frame), as browsers report it.
pub const ABNORMAL_CLOSE: u16 = 1006;
/// The code our API closes a socket with when its reader fell `WS_BUFFER` messages behind.
pub const TOO_SLOW_CLOSE: u16 = 1013;

/// Opens `/v1/events?<query>` on the API at `base` (`http://127.0.0.1:<port>`),
/// from `source` when given, and returns once the server has said `subscribed`.
pub async fn open(base: &str, token: &str, query: &str, source: Option<IpAddr>) -> anyhow::Result<Socket> {
    tokio::time::timeout(OPEN_TIMEOUT, open_inner(base, token, query, source))
        .await
        .with_context(|| format!("no `subscribed` within {OPEN_TIMEOUT:?}"))?
}

async fn open_inner(base: &str, token: &str, query: &str, source: Option<IpAddr>) -> anyhow::Result<Socket> {
    let authority = base.strip_prefix("http://").context("the API base is not http://")?;
    let addr: SocketAddr = authority.parse().with_context(|| format!("the API address {authority} is not ip:port"))?;
    let tcp = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        tcp.bind(SocketAddr::new(ip, 0)).with_context(|| format!("cannot bind to {ip}"))?;
    }
    let stream = tcp.connect(addr).await.context("TCP connect failed")?;
    stream.set_nodelay(true)?;
    let url = if query.is_empty() {
        format!("ws://{authority}/v1/events")
    } else {
        format!("ws://{authority}/v1/events?{query}")
    };
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER).write_buffer_size(0);
    let (mut socket, _) =
        match tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(stream), Some(config)).await {
            Ok(opened) => opened,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                bail!("upgrade refused: {} {body}", response.status())
            }
            Err(err) => return Err(err).context("WebSocket upgrade failed"),
        };
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                if parse(text.as_str()).is_some_and(|m| m.op == "subscribed") {
                    return Ok(socket);
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed before `subscribed`: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err).context("socket failed before `subscribed`"),
            None => bail!("socket ended before `subscribed`"),
        }
    }
}

/// The fields of a server message the harness reads.
#[derive(Debug, Deserialize)]
pub struct ServerMessage<'a> {
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(borrow, default)]
    pub job_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub at: Option<Cow<'a, str>>,
}

impl ServerMessage<'_> {
    /// `at` as Unix milliseconds (the API writes whole milliseconds).
    pub fn at_ms(&self) -> Option<f64> {
        let at = chrono::DateTime::parse_from_rfc3339(self.at.as_deref()?).ok()?;
        Some(at.timestamp_millis() as f64)
    }

    pub fn is_event(&self) -> bool {
        self.op == "event"
    }
}

/// A server message, or `None` if it is not one.
pub fn parse(text: &str) -> Option<ServerMessage<'_>> {
    serde_json::from_str(text).ok()
}

/// The code of a close frame (1005 when it has none).
pub fn close_code(frame: Option<&tungstenite::protocol::CloseFrame>) -> u16 {
    frame.map_or(1005, |f| u16::from(f.code))
}

/// Closes a socket politely, without waiting long for the server's answer.
pub async fn close(mut socket: Socket) {
    let frame = tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "bench done".into() };
    let _ = tokio::time::timeout(Duration::from_millis(200), socket.close(Some(frame))).await;
}

/// Now, as Unix milliseconds with a fractional part.
pub fn now_unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_message_gives_its_job_status_and_time() {
        let text = r#"{"op":"event","id":"1795635210012-0:3","job_id":"01a2","type":"noop","queue":"default",
            "status":"succeeded","attempt":1,"at":"2026-11-25T19:33:30.012Z"}"#;
        let message = parse(text).unwrap();
        assert!(message.is_event());
        assert_eq!(message.job_id.as_deref(), Some("01a2"));
        assert_eq!(message.status.as_deref(), Some("succeeded"));
        assert_eq!(message.at_ms(), Some(1_795_635_210_012.0));
    }

    #[test]
    fn other_messages_parse_without_the_event_fields() {
        let message = parse(r#"{"op":"subscribed","jobs":[],"queues":[],"all":true}"#).unwrap();
        assert!(!message.is_event());
        assert!(message.at_ms().is_none());
        assert!(parse("not json").is_none());
    }
}
