//! The WebSocket transport: one task per socket, reading the client's messages,
//! forwarding its live events, pinging, and closing with a code that says why.
//!
//! Every send races the stop signals and has a deadline (`WS_WRITE_TIMEOUT_SECS`),
//! so a client that stops reading is closed (1013) as soon as its queue in the
//! hub overflows or a write stalls, rather than holding the task on a full socket.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use governor::{Quota, RateLimiter};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, Sleep};

use super::hub::HubEvent;
use super::limits::Ticket;
use super::session::{ClientMessage, Out, Request, Session};
use super::{Draining, EventsSettings, OpenGauge};
use crate::auth::Principal;
use crate::error::ApiError;

/// How long a closing socket may take to accept its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// The same for a client closed for reading too slowly, which is likely not to read it.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long the server then waits for the client's close frame.
const CLOSE_REPLY: Duration = Duration::from_secs(1);

/// Why the server closes a socket.
#[derive(Debug, Clone, Copy)]
struct Stop {
    code: u16,
    reason: &'static str,
}

const SHUTTING_DOWN: Stop = Stop { code: 1001, reason: "server shutting down" };
const MISSED_PONGS: Stop = Stop { code: 1001, reason: "missed pongs" };
const TOKEN_EXPIRED: Stop = Stop { code: 1008, reason: "token expired" };
const TOO_BIG: Stop = Stop { code: 1009, reason: "message over 64 KiB" };
const TOO_SLOW: Stop = Stop { code: 1013, reason: "too slow: reconnect with since" };
const WRITE_STALLED: Stop = Stop { code: 1013, reason: "write timed out: reconnect with since" };
const TOO_CHATTY: Stop = Stop { code: 1008, reason: "too many messages" };

/// Inbound messages a client may send: a burst of [`MESSAGE_BURST`], then
/// [`MESSAGES_PER_SEC`] a second. Subscribing is all a client says, so more is abuse.
const MESSAGES_PER_SEC: NonZeroU32 = NonZeroU32::new(10).expect("non-zero");
const MESSAGE_BURST: NonZeroU32 = NonZeroU32::new(50).expect("non-zero");
/// The client is gone: nothing to send.
const GONE: Stop = Stop { code: 0, reason: "" };

/// Most events written to a socket with one flush.
const EVENTS_PER_WRITE: usize = 64;
/// Client messages kept while a replay runs, answered once it is done.
const DEFERRED_MAX: usize = 16;

/// What ends a connection from the outside.
struct Signals {
    shutdown: Option<watch::Receiver<bool>>,
    /// The token's expiry: one timer for the connection's life.
    expiry: Pin<Box<Sleep>>,
    overflow: watch::Receiver<bool>,
}

impl Signals {
    async fn stopped(&mut self) -> Stop {
        let shutdown = async {
            match &mut self.shutdown {
                // The server stopping, or gone altogether.
                Some(rx) => drop(rx.wait_for(|stop| *stop).await),
                None => std::future::pending().await,
            }
        };
        let overflow = async {
            if self.overflow.wait_for(|full| *full).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = shutdown => SHUTTING_DOWN,
            () = self.expiry.as_mut() => TOKEN_EXPIRED,
            () = overflow => TOO_SLOW,
        }
    }
}

struct Connection {
    socket: WebSocket,
    signals: Signals,
    write_timeout: Duration,
    /// Messages the client sent during a replay, in order.
    deferred: VecDeque<Utf8Bytes>,
}

impl Connection {
    async fn send(&mut self, message: Message) -> Result<(), Stop> {
        let write = tokio::time::timeout(self.write_timeout, self.socket.send(message));
        tokio::select! {
            sent = write => sent.map_err(|_| WRITE_STALLED)?.map_err(|_| GONE),
            stop = self.signals.stopped() => Err(stop),
        }
    }

    async fn send_out(&mut self, out: &Out) -> Result<(), Stop> {
        self.send(Message::Text(out.json().clone())).await
    }

    /// Sends `first` and the events already queued behind it (up to
    /// [`EVENTS_PER_WRITE`]) with one flush: under load, one write carries many
    /// events instead of one write each.
    async fn send_events(&mut self, session: &mut Session, first: Arc<HubEvent>) -> Result<(), Stop> {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            if session.wants(&event) {
                batch.push(Message::Text(event.json.clone()));
            }
            if batch.len() < EVENTS_PER_WRITE {
                // Nothing waiting, or the hub dropped us (the next recv says which).
                next = session.events.try_recv().ok();
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let Self { socket, signals, write_timeout, .. } = self;
        let write = async move {
            for message in batch {
                socket.feed(message).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            sent = tokio::time::timeout(*write_timeout, write) => sent.map_err(|_| WRITE_STALLED)?.map_err(|_| GONE),
            stop = signals.stopped() => Err(stop),
        }
    }

    /// Subscribes, then sends what is owed: acknowledgement, gap, snapshots or history.
    async fn subscribe(&mut self, session: &mut Session, request: &Request) -> Result<(), Stop> {
        let started = tokio::select! {
            started = session.subscribe(request) => started,
            stop = self.signals.stopped() => return Err(stop),
        };
        let (first, pending) = match started {
            Ok(started) => started,
            Err(err) => return self.send_out(&error_message(&err)).await,
        };
        for out in &first {
            self.send_out(out).await?;
        }
        let Some(mut pending) = pending else { return Ok(()) };
        loop {
            let page = tokio::select! {
                page = session.next_page(&mut pending) => page,
                stop = self.signals.stopped() => return Err(stop),
                // A client that leaves ends its replay; what it says meanwhile waits.
                inbound = self.socket.recv() => {
                    self.defer(inbound)?;
                    continue;
                }
            };
            match page {
                Ok(Some(page)) => {
                    for out in &page {
                        self.send_out(out).await?;
                    }
                }
                Ok(None) => return Ok(()),
                Err(err) => return self.send_out(&error_message(&err)).await,
            }
        }
    }

    /// Keeps a message that came during a replay; ends the connection if the client left.
    fn defer(&mut self, inbound: Option<Result<Message, axum::Error>>) -> Result<(), Stop> {
        match inbound {
            None | Some(Ok(Message::Close(_))) => Err(GONE),
            Some(Err(err)) => Err(if is_too_big(&err) { TOO_BIG } else { GONE }),
            Some(Ok(Message::Text(text))) if self.deferred.len() < DEFERRED_MAX => {
                self.deferred.push_back(text);
                Ok(())
            }
            Some(Ok(Message::Text(_) | Message::Binary(_))) => Err(TOO_CHATTY),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        }
    }

    /// Sends the close frame (bounded by [`CLOSE_GRACE`]) and lets the client answer.
    async fn close(mut self, stop: Stop) {
        if stop.code == 0 {
            return;
        }
        let grace = if stop.code == 1013 { SLOW_CLOSE_GRACE } else { CLOSE_GRACE };
        let frame = CloseFrame { code: stop.code, reason: Utf8Bytes::from_static(stop.reason) };
        if tokio::time::timeout(grace, self.socket.send(Message::Close(Some(frame)))).await.is_err() {
            return;
        }
        // Wait briefly for the client's close, so it reads ours before the TCP close.
        let reply = async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_REPLY, reply).await;
    }
}

fn error_message(err: &ApiError) -> Out {
    Out::error(err.code(), err.to_string())
}

/// Runs one socket until the client leaves or the server closes it.
pub(super) async fn run(
    socket: WebSocket,
    mut session: Session,
    initial: Request,
    caller: Principal,
    settings: EventsSettings,
    draining: Option<Draining>,
    place: Ticket,
) {
    let _gauge = OpenGauge::new("ws");
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(caller.expires_at);
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let signals = Signals {
        shutdown: draining.as_ref().map(|d| d.stopping.clone()),
        expiry: Box::pin(tokio::time::sleep(left)),
        overflow: session.overflow.clone(),
    };
    let mut conn = Connection { socket, signals, write_timeout: settings.write_timeout, deferred: VecDeque::new() };
    tracing::debug!(tenant = %caller.tenant, subject = %caller.subject, "event socket opened");
    let stop = serve(&mut conn, &mut session, &initial, settings.ping).await;
    tracing::debug!(tenant = %caller.tenant, code = stop.code, reason = stop.reason, "event socket closing");
    drop(session);
    conn.close(stop).await;
    drop((draining, place));
}

async fn serve(conn: &mut Connection, session: &mut Session, initial: &Request, ping: Duration) -> Stop {
    if let Err(stop) = conn.subscribe(session, initial).await {
        return stop;
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + ping, ping);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    let inbound_limit = RateLimiter::direct(Quota::per_second(MESSAGES_PER_SEC).allow_burst(MESSAGE_BURST));
    loop {
        if let Some(text) = conn.deferred.pop_front() {
            let step = match inbound_limit.check() {
                Ok(()) => handle(conn, session, text.as_str()).await,
                Err(_) => Err(TOO_CHATTY),
            };
            if let Err(stop) = step {
                return stop;
            }
            continue;
        }
        let step = tokio::select! {
            stop = conn.signals.stopped() => Err(stop),
            _ = ticker.tick() => {
                if unanswered >= 2 {
                    Err(MISSED_PONGS)
                } else {
                    unanswered += 1;
                    conn.send(Message::Ping(Default::default())).await
                }
            }
            inbound = conn.socket.recv() => match inbound {
                None => Err(GONE),
                Some(Err(err)) => Err(if is_too_big(&err) { TOO_BIG } else { GONE }),
                Some(Ok(Message::Pong(_))) => {
                    unanswered = 0;
                    Ok(())
                }
                Some(Ok(Message::Text(_) | Message::Binary(_))) if inbound_limit.check().is_err() => Err(TOO_CHATTY),
                Some(Ok(Message::Text(text))) => handle(conn, session, text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    conn.send_out(&Out::error("bad_request", "send JSON text messages")).await
                }
                // tungstenite answers pings and close frames by itself.
                Some(Ok(Message::Ping(_) | Message::Close(_))) => Ok(()),
            },
            event = session.events.recv() => match event {
                Some(event) => conn.send_events(session, event).await,
                // Dropped by the hub: only an overflow does that.
                None => Err(TOO_SLOW),
            },
        };
        if let Err(stop) = step {
            return stop;
        }
    }
}

async fn handle(conn: &mut Connection, session: &mut Session, text: &str) -> Result<(), Stop> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Subscribe(request)) => conn.subscribe(session, &request).await,
        Ok(ClientMessage::Unsubscribe(request)) => {
            let ack = session.unsubscribe(&request);
            conn.send_out(&ack).await
        }
        Err(err) => {
            let message =
                format!("expected {{\"op\":\"subscribe\"|\"unsubscribe\", \"jobs\"?, \"queue\"?, \"since\"?}}: {err}");
            conn.send_out(&Out::error("bad_request", message)).await
        }
    }
}

/// tungstenite refuses a message over `max_message_size` with a capacity error.
fn is_too_big(err: &axum::Error) -> bool {
    let text = err.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}
