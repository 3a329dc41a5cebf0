//! One client's subscriptions, whatever the transport: what it listens to, the
//! snapshots and history it is owed, and which live events it still needs.
//!
//! The seam rule: a target is added to the hub *before* its snapshot or history
//! is read, so nothing falls between the two; each target then keeps a floor
//! (the snapshot's or the replay's last id) and a live event is delivered only
//! if some target it matches has a floor below it. No gap, no duplicate.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::events::EventId;
use shared::model::JobRecord;
use shared::store::{JobStore, Payloads};
use tokio::sync::{mpsc, watch};

use super::hub::{Hub, HubEvent, Membership, Target};
use super::limits::{Limits, Ticket};
use crate::error::ApiError;

/// Most jobs one connection may follow by id.
pub const MAX_JOBS: usize = 1_000;
/// Most queues one connection may follow.
pub const MAX_QUEUES: usize = 100;
/// Stream entries read per history page (an entry holds up to 1,000 events).
const REPLAY_PAGE: usize = 16;
/// Snapshots read and sent at a time.
const SNAPSHOT_PAGE: usize = 100;

/// A message for the client, in the order it must be delivered.
#[derive(Debug, Clone)]
pub enum Out {
    Event(Arc<HubEvent>),
    /// `snapshot`, `gap`, `subscribed` or `error`, already serialized; `id` for SSE's `id:` line.
    Message {
        op: &'static str,
        id: Option<String>,
        json: Utf8Bytes,
    },
}

impl Out {
    fn message(op: &'static str, id: Option<String>, body: serde_json::Value) -> Self {
        Self::Message { op, id, json: body.to_string().into() }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::message("error", None, json!({"op": "error", "code": code, "message": message.into()}))
    }

    pub fn json(&self) -> &Utf8Bytes {
        match self {
            Self::Event(event) => &event.json,
            Self::Message { json, .. } => json,
        }
    }
}

/// `{"op":"subscribe"|"unsubscribe", "jobs"?, "queue"?, "since"?}` from the client,
/// or the query string of the request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub jobs: Vec<String>,
    pub queue: Option<String>,
    pub since: Option<String>,
    /// `payload`: snapshots carry their jobs' payloads.
    pub include: Option<String>,
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientMessage {
    Subscribe(Request),
    Unsubscribe(Request),
}

impl Request {
    /// Checks names and ids; `since` is parsed (`include` is read by [`Request::payloads`]).
    pub fn validate(&self) -> Result<Option<EventId>, ApiError> {
        let bad = |field: &str, message: &str| ApiError::BadParameter { field: field.into(), message: message.into() };
        if self.jobs.len() > MAX_JOBS {
            return Err(bad("job", &format!("at most {MAX_JOBS} job ids")));
        }
        if self.jobs.iter().any(|id| id.is_empty() || id.len() > 64) {
            return Err(bad("job", "job ids are 1-64 characters"));
        }
        if let Some(queue) = &self.queue
            && !crate::auth::valid_tenant(queue)
        {
            return Err(bad("queue", "a queue name is 1-64 of [A-Za-z0-9._-]"));
        }
        match &self.since {
            None => Ok(None),
            Some(since) => {
                EventId::parse(since).map(Some).ok_or_else(|| bad("since", "an event id such as `1700000000000-0:0`"))
            }
        }
    }

    /// What `include` asks for.
    pub fn payloads(&self) -> Result<Payloads, ApiError> {
        crate::routes::include_param(self.include.as_deref())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self.jobs.iter().cloned().map(Target::Job).collect();
        targets.extend(self.queue.clone().map(Target::Queue));
        if targets.is_empty() {
            targets.push(Target::All);
        }
        targets
    }
}

/// What a subscription still owes after its acknowledgement, sent a page at a
/// time as it is read: snapshots, or history.
pub enum Pending {
    Snapshots(Snapshots),
    Replay(Replay),
}

/// Snapshots not sent yet: read without payloads when the subscription was
/// checked; with `include=payload`, each page is read again with them.
pub struct Snapshots {
    records: VecDeque<(EventId, JobRecord)>,
    payloads: Payloads,
}

/// A history read in progress.
pub struct Replay {
    /// Targets added by this subscription, which the replay serves, with the
    /// last event dispatched when each was added.
    new: Vec<(Target, EventId)>,
    /// Read from this entry (inclusive) next; events up to `after` are skipped.
    from: String,
    after: EventId,
    /// The last event id the replay has covered.
    end: EventId,
    /// Where live delivery starts: once the replay gets there, it is done.
    live_from: EventId,
    /// Events read so far, and the most it may read (`EVENTS_REPLAY_MAX`).
    scanned: usize,
    max: usize,
    done: bool,
    /// A place among the tenant's replays (`EVENTS_REPLAYS_PER_TENANT`).
    _ticket: Ticket,
}

pub struct Session {
    store: JobStore,
    tenant: String,
    membership: Membership,
    limits: Limits,
    replay_max: usize,
    /// Snapshots carry payloads (the connection asked with `include=payload`).
    payloads: Payloads,
    /// The replay place taken before the upgrade, for the first subscription.
    first_replay: Option<Ticket>,
    /// Live events for this client, bounded; overflow closes it.
    pub events: mpsc::Receiver<Arc<HubEvent>>,
    pub overflow: watch::Receiver<bool>,
    /// Each target and its floor: its live events at or below it were already sent.
    targets: HashMap<Target, EventId>,
}

impl Session {
    pub fn new(hub: &Hub, store: JobStore, tenant: &str, settings: &super::EventsSettings) -> Self {
        let joined = hub.join(tenant);
        Self {
            store,
            tenant: tenant.to_owned(),
            membership: joined.membership,
            limits: settings.limits.clone(),
            replay_max: settings.replay_max,
            payloads: Payloads::Omit,
            first_replay: None,
            events: joined.events,
            overflow: joined.overflow,
            targets: HashMap::new(),
        }
    }

    /// Snapshots carry payloads by default, and the replay place for the first
    /// subscription (with `since`) is already taken.
    pub fn prepared(mut self, payloads: Payloads, first_replay: Option<Ticket>) -> Self {
        self.payloads = payloads;
        self.first_replay = first_replay;
        self
    }

    /// Whether a live event is owed to the client.
    pub fn wants(&self, event: &HubEvent) -> bool {
        self.targets.iter().any(|(target, floor)| target.matches(event) && event.id > *floor)
    }

    /// Adds the request's targets. Returns the messages to send first (errors,
    /// the acknowledgement, or a gap) and what is owed after them, to be read a
    /// page at a time with [`Session::next_page`].
    pub async fn subscribe(&mut self, request: &Request) -> Result<(Vec<Out>, Option<Pending>), ApiError> {
        let since = request.validate()?;
        let payloads = match request.payloads()? {
            Payloads::Include => Payloads::Include,
            Payloads::Omit => self.payloads,
        };
        let mut out = Vec::new();
        let mut wanted = request.targets();
        let jobs = self.jobs().len() + wanted.iter().filter(|t| matches!(t, Target::Job(_))).count();
        let queues = self.queues().len() + wanted.iter().filter(|t| matches!(t, Target::Queue(_))).count();
        if jobs > MAX_JOBS || queues > MAX_QUEUES {
            return Ok((
                vec![Out::error("too_many", format!("at most {MAX_JOBS} jobs and {MAX_QUEUES} queues"))],
                None,
            ));
        }
        let ticket = match since {
            None => None,
            Some(_) => match self.first_replay.take().map_or_else(|| self.limits.replay(&self.tenant), Ok) {
                Ok(ticket) => Some(ticket),
                Err(err) => return Ok((vec![Out::error(err.code(), err.to_string())], None)),
            },
        };
        let mut live_start = HashMap::new();
        for target in &wanted {
            live_start.insert(target.clone(), self.membership.add(target));
        }
        // Jobs: check each exists for this tenant (reading its snapshot at the same instant).
        let mut snapshots = VecDeque::new();
        if !request.jobs.is_empty() {
            let snapshot = self.store.snapshot(&self.tenant, &request.jobs, Payloads::Omit).await?;
            for (id, record) in request.jobs.iter().zip(snapshot.records) {
                match record {
                    Some(record) => snapshots.push_back((snapshot.as_of, record)),
                    None => {
                        let target = Target::Job(id.clone());
                        if !self.targets.contains_key(&target) {
                            self.membership.remove(&target);
                        }
                        wanted.retain(|t| *t != target);
                        out.push(Out::error("not_found", format!("no job with id `{id}`")));
                    }
                }
            }
        }
        let (Some(since), Some(ticket)) = (since, ticket) else {
            for target in &wanted {
                let floor = live_start[target];
                let floor = match target {
                    Target::Job(id) => {
                        snapshots.iter().find(|(_, r)| r.id == *id).map_or(floor, |(s, _)| (*s).max(floor))
                    }
                    _ => floor,
                };
                self.targets.insert(target.clone(), floor);
            }
            out.push(self.acknowledgement());
            let pending =
                (!snapshots.is_empty()).then_some(Pending::Snapshots(Snapshots { records: snapshots, payloads }));
            return Ok((out, pending));
        };
        // Replay: the new targets go live once it has caught up (floors set then).
        let mut new = Vec::new();
        for target in wanted {
            let start = live_start[&target];
            self.targets.insert(target.clone(), start);
            new.push((target, start));
        }
        out.push(self.acknowledgement());
        let live_from = new.iter().map(|(_, start)| *start).max().unwrap_or(EventId::ZERO);
        let mut replay = Replay {
            new,
            from: since.entry(),
            after: since,
            end: since,
            live_from,
            scanned: 0,
            max: self.replay_max,
            done: false,
            _ticket: ticket,
        };
        if let Some(oldest) = self.store.oldest_event().await?
            && (since.ms, since.seq) < (oldest.ms, oldest.seq)
        {
            out.push(gap(request.since.as_deref().unwrap_or_default(), &oldest.to_string()));
            replay.from = oldest.entry();
            replay.after = EventId::ZERO;
        }
        Ok((out, Some(Pending::Replay(replay))))
    }

    /// The next page of what a subscription owes; `None` once all is sent (a
    /// replay's targets then go live).
    pub async fn next_page(&mut self, pending: &mut Pending) -> Result<Option<Vec<Out>>, ApiError> {
        match pending {
            Pending::Snapshots(snapshots) => self.snapshot_page(snapshots).await,
            Pending::Replay(replay) => self.replay_page(replay).await,
        }
    }

    async fn snapshot_page(&mut self, snapshots: &mut Snapshots) -> Result<Option<Vec<Out>>, ApiError> {
        let count = snapshots.records.len().min(SNAPSHOT_PAGE);
        if count == 0 {
            return Ok(None);
        }
        let page: Vec<(EventId, JobRecord)> = snapshots.records.drain(..count).collect();
        if snapshots.payloads == Payloads::Omit {
            return Ok(Some(page.iter().map(|(as_of, record)| snapshot(*as_of, record)).collect()));
        }
        // Read again with payloads. Nothing live is sent before the pages are, so
        // raising a job's floor to the newer read keeps the seam exact.
        let ids: Vec<String> = page.iter().map(|(_, r)| r.id.clone()).collect();
        let fresh = self.store.snapshot(&self.tenant, &ids, Payloads::Include).await?;
        let mut out = Vec::with_capacity(count);
        for ((as_of, lean), full) in page.into_iter().zip(fresh.records) {
            match full {
                Some(record) => {
                    if let Some(floor) = self.targets.get_mut(&Target::Job(record.id.clone())) {
                        *floor = (*floor).max(fresh.as_of);
                    }
                    out.push(snapshot(fresh.as_of, &record));
                }
                // Deleted since: what was read first is all there is.
                None => out.push(snapshot(as_of, &lean)),
            }
        }
        Ok(Some(out))
    }

    /// The next page of a replay; `None` once it has caught up (its targets then go live).
    async fn replay_page(&mut self, replay: &mut Replay) -> Result<Option<Vec<Out>>, ApiError> {
        loop {
            if replay.done {
                for (target, start) in &replay.new {
                    if self.targets.contains_key(target) {
                        self.targets.insert(target.clone(), replay.end.max(*start));
                    }
                }
                return Ok(None);
            }
            let (events, last) = self.store.events_from(&replay.from, REPLAY_PAGE).await?;
            let mut page = Vec::new();
            for event in events {
                if replay.scanned >= replay.max && replay.end < replay.live_from {
                    // Too far behind to replay: say what is skipped, and go on from the live stream.
                    replay.done = true;
                    let skipped_from = replay.end.to_string();
                    replay.end = replay.live_from;
                    page.push(gap(&skipped_from, &replay.live_from.to_string()));
                    return Ok(Some(page));
                }
                replay.scanned += 1;
                let Some(id) = EventId::parse(&event.id) else { continue };
                replay.end = replay.end.max(id);
                if id <= replay.after || event.tenant != self.tenant {
                    continue;
                }
                let Some(event) = HubEvent::new(event) else { continue };
                let is_new = |t: &Target| replay.new.iter().any(|(n, _)| n == t);
                let wanted = replay.new.iter().any(|(t, _)| t.matches(&event));
                // A target followed before this subscription delivers (or delivered) it live.
                let live = self.targets.iter().any(|(t, floor)| !is_new(t) && t.matches(&event) && event.id > *floor);
                if wanted && !live {
                    page.push(Out::Event(Arc::new(event)));
                }
            }
            match last {
                // Past where live delivery starts, the live queue has the rest.
                Some(_) if replay.end >= replay.live_from => replay.done = true,
                Some(last) => replay.from = format!("({last}"),
                None => replay.done = true,
            }
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
    }

    /// Removes the request's targets; returns the acknowledgement.
    pub fn unsubscribe(&mut self, request: &Request) -> Out {
        for target in request.targets() {
            if self.targets.remove(&target).is_some() {
                self.membership.remove(&target);
            }
        }
        self.acknowledgement()
    }

    fn jobs(&self) -> BTreeSet<&str> {
        self.targets.keys().filter_map(|t| if let Target::Job(id) = t { Some(id.as_str()) } else { None }).collect()
    }

    fn queues(&self) -> BTreeSet<&str> {
        self.targets.keys().filter_map(|t| if let Target::Queue(q) = t { Some(q.as_str()) } else { None }).collect()
    }

    fn acknowledgement(&self) -> Out {
        Out::message(
            "subscribed",
            None,
            json!({"op": "subscribed", "jobs": self.jobs(), "queues": self.queues(),
                   "all": self.targets.contains_key(&Target::All)}),
        )
    }
}

/// Events after `since` up to `oldest` are not delivered: the client reads
/// what it shows again over REST.
fn gap(since: &str, oldest: &str) -> Out {
    Out::message("gap", None, json!({"op": "gap", "since": since, "oldest": oldest}))
}

fn snapshot(as_of: EventId, record: &JobRecord) -> Out {
    #[derive(Serialize)]
    struct Wire<'a> {
        op: &'static str,
        id: String,
        job: &'a JobRecord,
    }
    let id = as_of.to_string();
    let json = serde_json::to_string(&Wire { op: "snapshot", id: id.clone(), job: record }).unwrap_or_default();
    Out::Message { op: "snapshot", id: Some(id), json: json.into() }
}
