//! `GET /v1/events`: live job status over WebSocket, or Server-Sent Events with
//! `Accept: text/event-stream`.
//!
//! # Layout
//! - `hub.rs` — one Redis reader per API instance, fanning events out to rooms
//!   per tenant (per queue and per job inside);
//! - `session.rs` — one client's subscriptions: snapshots, resume, the seam rule;
//! - `ws.rs` / `sse.rs` — the two transports.
//!
//! Everything about the caller is settled before the upgrade: the Origin, the
//! token (header, `?access_token=` or the `bearer` subprotocol), its `jobs:read`
//! scope and the filters. A refused request never gets an open socket.

mod hub;
mod limits;
mod session;
mod sse;
mod ws;

use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

pub use hub::Hub;
use limits::{Limits, Ticket};

use crate::AppState;
use crate::auth::{Principal, Scope};
use crate::config::EventsArgs;
use crate::error::{ApiError, PROBLEM_JSON as PROBLEM, Problem};
use session::{Request, Session};

/// Inbound messages (and frames) larger than this close the socket with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Settings every event connection of one API instance shares.
#[derive(Clone)]
pub struct EventsSettings {
    pub ping: Duration,
    pub buffer: usize,
    /// How long one write may take before the connection is closed (1013).
    pub write_timeout: Duration,
    /// Events one replay reads at most (`EVENTS_REPLAY_MAX`).
    pub replay_max: usize,
    /// The instance's caps on connections and replays.
    pub limits: Limits,
    /// Origins allowed besides the API's own, lower-case, without a trailing slash.
    pub allowed_origins: Vec<String>,
}

impl EventsSettings {
    pub fn from_config(args: &EventsArgs) -> Self {
        Self {
            ping: Duration::from_secs(args.ws_ping_secs),
            buffer: args.ws_buffer as usize,
            write_timeout: Duration::from_secs(args.ws_write_timeout_secs),
            replay_max: args.events_replay_max as usize,
            limits: Limits::new(
                args.ws_max_connections as usize,
                args.ws_max_per_tenant as usize,
                args.events_replays_per_tenant as usize,
            ),
            allowed_origins: args
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }
}

/// Put on every request by [`crate::serve`]: long-lived responses (sockets,
/// event streams) end when `stopping` turns true, and hold `_open` until they
/// have, so shutdown waits for their goodbyes.
#[derive(Clone)]
pub struct Draining {
    pub stopping: watch::Receiver<bool>,
    pub _open: mpsc::Sender<()>,
}

/// The filters, from the query string.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Follow these jobs (comma-separated ids): a snapshot of each, then its changes.
    job: Option<String>,
    /// Follow every job of this queue.
    queue: Option<String>,
    /// Resume after this event id (for SSE, the `Last-Event-ID` header does the same).
    since: Option<String>,
    /// `payload`: snapshots carry their jobs' payloads (left out by default).
    include: Option<String>,
    /// The token, for browsers (which cannot set headers on a WebSocket).
    access_token: Option<String>,
}

impl EventsQuery {
    fn request(&self, last_event_id: Option<&str>) -> Request {
        Request {
            jobs: self.job.iter().flat_map(|jobs| jobs.split(',')).map(str::trim).map(str::to_owned).collect(),
            queue: self.queue.clone(),
            since: last_event_id.map(str::to_owned).or_else(|| self.since.clone()),
            include: self.include.clone(),
        }
    }
}

/// `GET /v1/events` — upgrades to a WebSocket, or streams Server-Sent Events.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "Live job status (WebSocket, or Server-Sent Events)",
    description = "Upgrade with `Connection: Upgrade`, `Upgrade: websocket`, or send `Accept: text/event-stream`. \
The token comes from `Authorization: Bearer`, `?access_token=`, or the subprotocols `bearer` and the token \
(the server selects `bearer`). Messages are JSON with an `op`: `event`, `snapshot`, `gap`, `subscribed`, `error`; \
the client sends `subscribe` / `unsubscribe`. Snapshots leave out payloads unless `include=payload`. \
See the README, \"Live events\".",
    params(EventsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 200, description = "An event stream (`text/event-stream`), with `Accept: text/event-stream`.",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "`bad_parameter`: a filter is malformed.", body = Problem, content_type = PROBLEM),
        (status = 401, description = "`unauthorized`: no token, or one that does not verify.",
            body = Problem, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: no `jobs:read` scope, or an Origin that is not allowed.",
            body = Problem, content_type = PROBLEM),
        (status = 426, description = "`upgrade_required`: neither a WebSocket upgrade nor `Accept: text/event-stream`.",
            body = Problem, content_type = PROBLEM),
        (status = 429, description = "`too_many_connections`: the tenant holds `WS_MAX_PER_TENANT` event \
connections on this instance; `too_many_replays`: it has `EVENTS_REPLAYS_PER_TENANT` replays (`since`) running.",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "`unavailable`; `too_many_connections`: the instance holds `WS_MAX_CONNECTIONS`.",
            body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get_events(
    State(state): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
    draining: Option<Extension<Draining>>,
) -> Result<Response, ApiError> {
    check_origin(&headers, &state.events_settings)?;
    let query = query
        .map(|Query(q)| q)
        .map_err(|err| ApiError::BadParameter { field: "query".into(), message: err.body_text() })?;
    let mut ws = ws.ok();
    let caller = authenticate(&state, &headers, &query, ws.as_mut())?;
    caller.require(Scope::JobsRead)?;
    let draining = draining.map(|Extension(d)| d);
    let settings = &state.events_settings;
    match ws {
        Some(ws) => {
            let request = query.request(None);
            let (session, place) = prepare(&state, &caller, &request)?;
            let settings = EventsSettings::clone(settings);
            let max_body = state.max_body_bytes as usize;
            Ok(ws
                .max_message_size(MAX_MESSAGE_BYTES)
                .max_frame_size(MAX_MESSAGE_BYTES)
                .read_buffer_size(8 * 1024)
                .write_buffer_size(64 * 1024)
                .max_write_buffer_size(2 * max_body + 256 * 1024)
                .on_failed_upgrade(|err| tracing::debug!(error = %err, "websocket upgrade failed"))
                .on_upgrade(move |socket| ws::run(socket, session, request, caller, settings, draining, place)))
        }
        None if accepts_event_stream(&headers) => {
            let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
            let request = query.request(last_event_id);
            let (session, place) = prepare(&state, &caller, &request)?;
            Ok(sse::stream(session, request, caller, settings, draining, place).into_response())
        }
        None => Err(ApiError::UpgradeRequired),
    }
}

/// Checks the request and takes the caller's places (a connection, and a
/// replay with `since`) before the upgrade, so a refused client gets a status code.
fn prepare(state: &AppState, caller: &Principal, request: &Request) -> Result<(Session, Ticket), ApiError> {
    request.validate()?;
    let settings = &state.events_settings;
    let payloads = request.payloads()?;
    let store = state.store()?.clone();
    let place = settings.limits.connect(&caller.tenant)?;
    let replay = request.since.as_ref().map(|_| settings.limits.replay(&caller.tenant)).transpose()?;
    let session = Session::new(&state.events, store, &caller.tenant, settings).prepared(payloads, replay);
    Ok((session, place))
}

/// The token from the Authorization header, the `bearer` subprotocol, or `?access_token=`.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &EventsQuery,
    ws: Option<&mut WebSocketUpgrade>,
) -> Result<Principal, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        if let Some(ws) = ws
            && ws.requested_protocols().any(|p| p == "bearer")
        {
            ws.set_selected_protocol(HeaderValue::from_static("bearer"));
        }
        return state.auth.verify_header(Some(value.to_str().unwrap_or("")));
    }
    if let Some(ws) = ws {
        let offered: Vec<String> =
            ws.requested_protocols().filter_map(|p| p.to_str().ok()).map(|p| p.trim().to_owned()).collect();
        if offered.iter().any(|p| p == "bearer") {
            // Never echo the token: the server selects `bearer`.
            ws.set_selected_protocol(HeaderValue::from_static("bearer"));
            let token = offered
                .iter()
                .find(|p| *p != "bearer")
                .ok_or_else(|| ApiError::Unauthorized("offer the subprotocols `bearer` and the token".into()))?;
            return state.auth.verify(token);
        }
    }
    match &query.access_token {
        Some(token) => state.auth.verify(token),
        None => Err(ApiError::Unauthorized(
            "send `Authorization: Bearer <token>`, `?access_token=<token>` or the subprotocols `bearer` and the token"
                .into(),
        )),
    }
}

/// A page may open the stream only from the API's own origin or an allowed one
/// (cross-site WebSocket hijacking); clients that send no Origin are not browsers.
fn check_origin(headers: &HeaderMap, settings: &EventsSettings) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
    let own = host.is_some_and(|host| {
        origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|o| o == host)
    });
    if own || settings.allowed_origins.contains(&origin) {
        Ok(())
    } else {
        tracing::info!(%origin, "event stream refused: origin not allowed");
        Err(ApiError::Forbidden("this Origin may not open the event stream (see ALLOWED_ORIGINS)".into()))
    }
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|part| part.trim().starts_with("text/event-stream")))
}

/// Counts open event connections (`events_connections_open{transport}`) while alive.
pub(crate) struct OpenGauge(&'static str);

impl OpenGauge {
    pub(crate) fn new(transport: &'static str) -> Self {
        metrics::gauge!("events_connections_open", "transport" => transport).increment(1.0);
        Self(transport)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!("events_connections_open", "transport" => self.0).decrement(1.0);
    }
}
