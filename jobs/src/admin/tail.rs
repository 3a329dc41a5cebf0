//! `jobs tail`: live events over the `/v1/events` WebSocket, one line each.
//!
//! The last event id seen is the resume point: when the server closes with 1001
//! (shutting down, missed pongs) or 1013 (we read too slowly, or it lost Redis), or the
//! connection just drops, the next connection asks for `since` = that id, and the API
//! replays what was missed without repeating anything. Reconnects back off up to
//! [`MAX_BACKOFF`] and give up after [`MAX_RECONNECTS`] in a row that carried nothing. The
//! first connection is not retried: a wrong URL or token should fail at once.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TailArgs;
use super::client::Client;
use super::failure::{Failure, parse_retry_after};
use super::print::{cell, event_line};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Failed connects or fruitless sessions in a row before `tail` gives up (about a minute).
const MAX_RECONNECTS: u32 = 12;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long counts as working even if it carried nothing, so a
/// quiet tail survives any number of API restarts.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// What this follower has seen, across connections.
struct Position {
    /// `--since`, until something newer is seen.
    since: Option<String>,
    last_event: Option<String>,
    /// With no event yet, the first snapshot's stream position resumes every job
    /// followed (snapshots read later sit at later positions).
    first_snapshot: Option<String>,
    events: u64,
}

impl Position {
    fn resume_from(&self) -> Option<&str> {
        self.last_event.as_deref().or(self.first_snapshot.as_deref()).or(self.since.as_deref())
    }
}

/// How one connection ended.
enum Ended {
    /// `--count` reached or Ctrl-C: the command is done.
    Done,
    /// Closed or dropped in a way worth reconnecting after; `true` if it delivered anything.
    Lost { reason: String, delivered: bool },
}

pub async fn tail(client: &Client, args: &TailArgs) -> Result<(), Failure> {
    let mut stop = pin!(tokio::signal::ctrl_c());
    let mut position = Position { since: args.since.clone(), last_event: None, first_snapshot: None, events: 0 };
    let mut connected_once = false;
    let mut in_a_row = 0u32;
    loop {
        let url = events_url(client, args, position.resume_from())?;
        let connected = tokio::select! {
            _ = &mut stop => return Ok(()),
            connected = connect(client, &url) => connected,
        };
        let reason = match connected {
            Ok(socket) => {
                connected_once = true;
                let started = Instant::now();
                match follow(client, socket, args, &mut position, &mut stop).await? {
                    Ended::Done => return Ok(()),
                    Ended::Lost { reason, delivered } => {
                        if delivered || started.elapsed() >= HEALTHY_SESSION {
                            in_a_row = 0;
                        }
                        reason
                    }
                }
            }
            Err(failure) if connected_once && reconnectable(&failure) => failure.to_string(),
            Err(failure) => return Err(failure),
        };
        in_a_row += 1;
        if in_a_row > MAX_RECONNECTS {
            return Err(Failure::Unreachable(format!("gave up after {MAX_RECONNECTS} reconnects: {reason}")));
        }
        let wait = backoff(in_a_row);
        let from = position.resume_from().map(|id| format!(" since {id}")).unwrap_or_default();
        eprintln!("tail: {reason}; reconnecting{from} in {:.1}s", wait.as_secs_f64());
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

/// Worth another try: no answer, the API busy (503) or full of connections (429).
fn reconnectable(failure: &Failure) -> bool {
    matches!(failure, Failure::Unreachable(_) | Failure::Api { status: 429 | 503, .. })
}

fn events_url(client: &Client, args: &TailArgs, since: Option<&str>) -> Result<Url, Failure> {
    let mut url = client.url(&["v1", "events"]);
    url.set_scheme("ws").map_err(|()| Failure::Usage(format!("cannot make a WebSocket URL of {url}")))?;
    {
        let mut query = url.query_pairs_mut();
        if !args.jobs.is_empty() {
            query.append_pair("job", &args.jobs.join(","));
        }
        if let Some(queue) = &args.queue {
            query.append_pair("queue", queue);
        }
        if let Some(since) = since {
            query.append_pair("since", since);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Opens the socket, the token in `Authorization` (never in the URL, which may be logged).
async fn connect(client: &Client, url: &Url) -> Result<Socket, Failure> {
    let mut request =
        url.as_str().into_client_request().map_err(|err| Failure::Usage(format!("bad events URL {url}: {err}")))?;
    if let Some(bearer) = client.bearer() {
        let value =
            HeaderValue::from_str(&bearer).map_err(|_| Failure::Usage("the token is not a header value".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err(Failure::Unreachable(format!("{url}: no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let retry_after = response.headers().get("retry-after").and_then(|value| value.to_str().ok());
            let retry_after = parse_retry_after(retry_after);
            let body = response.body().as_deref().unwrap_or_default();
            Err(Failure::from_answer(response.status().as_u16(), body, retry_after))
        }
        Ok(Err(err)) => Err(Failure::Unreachable(format!("{url}: {err}"))),
    }
}

/// Reads one connection until `--count`, Ctrl-C, or its end.
async fn follow<F: Future + Unpin>(
    client: &Client,
    mut socket: Socket,
    args: &TailArgs,
    position: &mut Position,
    stop: &mut F,
) -> Result<Ended, Failure> {
    let mut delivered = false;
    loop {
        let message = tokio::select! {
            _ = &mut *stop => {
                close(&mut socket).await;
                return Ok(Ended::Done);
            }
            message = socket.next() => message,
        };
        let message = match message {
            None => return Ok(Ended::Lost { reason: "the connection dropped".into(), delivered }),
            Some(Err(err)) => return Ok(Ended::Lost { reason: format!("the connection failed: {err}"), delivered }),
            Some(Ok(message)) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                return match code {
                    // 1005/1006: no code at all, as good as a drop.
                    1001 | 1013 | 1005 | 1006 => {
                        Ok(Ended::Lost { reason: format!("the API closed the stream ({code} {reason})"), delivered })
                    }
                    _ => Err(Failure::Closed { code, reason }),
                };
            }
            _ => continue,
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        match value.get("op").and_then(Value::as_str).unwrap_or_default() {
            "event" => {
                delivered = true;
                position.events += 1;
                position.last_event = id.or(position.last_event.take());
                println!("{}", if client.json { text.as_str().to_owned() } else { event_line(&value) });
                if args.count.is_some_and(|count| position.events >= count) {
                    close(&mut socket).await;
                    return Ok(Ended::Done);
                }
            }
            "snapshot" => {
                delivered = true;
                if position.last_event.is_none() && position.first_snapshot.is_none() {
                    position.first_snapshot = id;
                }
                println!("{}", if client.json { text.as_str().to_owned() } else { snapshot_line(&value) });
            }
            "subscribed" => eprintln!("tail: subscribed to {}", subscription(&value)),
            "gap" => eprintln!(
                "gap: events after {} up to {} were not delivered; re-read what you follow over REST",
                value.get("since").map(cell).unwrap_or_default(),
                value.get("oldest").map(cell).unwrap_or_default()
            ),
            "error" => eprintln!(
                "tail: the API refused: {}: {}",
                value.get("code").map(cell).unwrap_or_default(),
                value.get("message").map(cell).unwrap_or_default()
            ),
            // An op this client does not know yet: newer APIs may add some.
            _ => {}
        }
    }
}

/// Best effort: a polite close frame, not waiting long for the reply.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

/// A snapshot (the state of a job followed by id) in the same columns as an event.
fn snapshot_line(message: &Value) -> String {
    let record = message.get("job").cloned().unwrap_or_default();
    let field = |name: &str| record.get(name).cloned().unwrap_or_default();
    let at = ["finished_at", "started_at", "scheduled_at", "created_at"]
        .iter()
        .map(|name| field(name))
        .find(|value| !value.is_null())
        .unwrap_or_default();
    let mut event = json!({"at": at, "status": field("status"), "type": field("type"), "queue": field("queue"),
        "job_id": field("id"), "attempt": field("attempts")});
    if let Some(error) = record.get("last_error").filter(|error| !error.is_null()) {
        event["error"] = error.clone();
    }
    format!("{} (snapshot)", event_line(&event))
}

fn subscription(message: &Value) -> String {
    if message.get("all").and_then(Value::as_bool) == Some(true) {
        return "all jobs".into();
    }
    let list = |name: &str| -> Vec<String> {
        message.get(name).and_then(Value::as_array).into_iter().flatten().map(cell).collect()
    };
    let (jobs, queues) = (list("jobs"), list("queues"));
    let mut parts = Vec::new();
    if !queues.is_empty() {
        parts.push(format!("queue {}", queues.join(", ")));
    }
    match jobs.as_slice() {
        [] => {}
        [job] => parts.push(format!("job {job}")),
        jobs => parts.push(format!("{} jobs", jobs.len())),
    }
    if parts.is_empty() { "nothing".into() } else { parts.join(" and ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn the_resume_point_is_the_last_event_then_the_first_snapshot_then_since() {
        let mut position = Position { since: Some("1-0:0".into()), last_event: None, first_snapshot: None, events: 0 };
        assert_eq!(position.resume_from(), Some("1-0:0"));
        position.first_snapshot = Some("5-0:0".into());
        assert_eq!(position.resume_from(), Some("5-0:0"));
        position.last_event = Some("7-0:2".into());
        assert_eq!(position.resume_from(), Some("7-0:2"));
    }
}
