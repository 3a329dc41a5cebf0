//! The Server-Sent Events transport: the same session as a socket, one way.
//!
//! A task drives the session and hands its messages to the response body over
//! a small bounded channel. Event ids are the `id:` lines, so a reconnecting
//! `EventSource` resumes through `Last-Event-ID`. The stream ends when the
//! client leaves, the token expires, the server stops, or the client falls too
//! far behind (it then reconnects and resumes).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::session::{Out, Request, Session};
use super::{Draining, OpenGauge};
use crate::auth::Principal;

/// Messages waiting for the response body; the hub's queue is the real buffer.
const HANDOFF: usize = 64;

pub(super) fn stream(
    session: Session,
    request: Request,
    caller: Principal,
    keep_alive: Duration,
    draining: Option<Draining>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Out>(HANDOFF);
    tokio::spawn(drive(session, request, caller, tx, draining));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let out = rx.recv().await?;
        Some((Ok(to_event(&out)), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive))
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
    tx: mpsc::Sender<Out>,
    draining: Option<Draining>,
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
        let (first, replay) = match session.subscribe(&request).await {
            Ok(started) => started,
            Err(err) => {
                let _ = tx.send(Out::error(err.code(), err.to_string())).await;
                return;
            }
        };
        for out in first {
            if tx.send(out).await.is_err() {
                return;
            }
        }
        if let Some(mut replay) = replay {
            while let Ok(Some(page)) = session.replay_page(&mut replay).await {
                for out in page {
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        }
        loop {
            tokio::select! {
                event = session.events.recv() => match event {
                    Some(event) if session.wants(&event) => {
                        if tx.send(Out::Event(event)).await.is_err() {
                            return;
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stopped => {}
    }
    drop(draining);
}

async fn overflowed(overflow: &mut watch::Receiver<bool>) {
    if overflow.wait_for(|full| *full).await.is_err() {
        std::future::pending::<()>().await;
    }
}
