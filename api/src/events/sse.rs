//! The Server-Sent Events transport: the same session as a socket, one way.
//!
//! A task drives the session and hands its messages to the response body over
//! a small bounded channel. Event ids are the `id:` lines, so a reconnecting
//! `EventSource` resumes through `Last-Event-ID`. The stream ends when the
//! client leaves, the token expires, the server stops, or the client falls too
//! far behind or stops reading for `WS_WRITE_TIMEOUT_SECS` (it then reconnects
//! and resumes).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::limits::Ticket;
use super::session::{Out, Request, Session};
use super::{Draining, EventsSettings, OpenGauge};
use crate::auth::Principal;

/// Messages waiting for the response body; the hub's queue is the real buffer.
const HANDOFF: usize = 64;

pub(super) fn stream(
    session: Session,
    request: Request,
    caller: Principal,
    settings: &EventsSettings,
    draining: Option<Draining>,
    place: Ticket,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let (tx, rx) = mpsc::channel::<Out>(HANDOFF);
    let handoff = Handoff { tx, write_timeout: settings.write_timeout };
    tokio::spawn(drive(session, request, caller, handoff, (draining, place)));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let out = rx.recv().await?;
        Some((Ok(to_event(&out)), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(settings.ping))
}

/// The way to the response body. A body that takes nothing for the write
/// timeout belongs to a client that stopped reading: the stream ends.
struct Handoff {
    tx: mpsc::Sender<Out>,
    write_timeout: Duration,
}

impl Handoff {
    /// Whether `out` was taken.
    async fn send(&self, out: Out) -> bool {
        matches!(tokio::time::timeout(self.write_timeout, self.tx.send(out)).await, Ok(Ok(())))
    }
}

fn to_event(out: &Out) -> Event {
    match out {
        Out::Event(event) => Event::default().id(event.id.to_string()).data(event.json.as_str()),
        Out::Message { op, id, json } => {
            let event = Event::default().event(*op).data(json.as_str());
            match id {
                Some(id) => event.id(id.as_str()),
                None => event,
            }
        }
    }
}

async fn drive(
    mut session: Session,
    request: Request,
    caller: Principal,
    tx: Handoff,
    (draining, place): (Option<Draining>, Ticket),
) {
    let _gauge = OpenGauge::new("sse");
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(caller.expires_at);
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let deadline = Instant::now() + left;
    let mut shutdown = draining.as_ref().map(|d| d.stopping.clone());
    let mut overflow = session.overflow.clone();
    let stopped = async move {
        let shutdown = async {
            match &mut shutdown {
                Some(rx) => drop(rx.wait_for(|stop| *stop).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = overflowed(&mut overflow) => {}
        }
    };
    let work = async {
        let (first, pending) = match session.subscribe(&request).await {
            Ok(started) => started,
            Err(err) => {
                tx.send(Out::error(err.code(), err.to_string())).await;
                return;
            }
        };
        for out in first {
            if !tx.send(out).await {
                return;
            }
        }
        if let Some(mut pending) = pending {
            loop {
                // A client that leaves ends the replay.
                let page = tokio::select! {
                    page = session.next_page(&mut pending) => page,
                    () = tx.tx.closed() => return,
                };
                match page {
                    Ok(Some(page)) => {
                        for out in page {
                            if !tx.send(out).await {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tx.send(Out::error(err.code(), err.to_string())).await;
                        return;
                    }
                }
            }
        }
        loop {
            tokio::select! {
                event = session.events.recv() => match event {
                    Some(event) if session.wants(&event) => {
                        if !tx.send(Out::Event(event)).await {
                            return;
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
                () = tx.tx.closed() => return,
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stopped => {}
    }
    drop((draining, place));
}

async fn overflowed(overflow: &mut watch::Receiver<bool>) {
    if overflow.wait_for(|full| *full).await.is_err() {
        std::future::pending::<()>().await;
    }
}
