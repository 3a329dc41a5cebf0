//! The connection manager: ONE Redis reader per API instance, fanning events
//! out in-process to rooms per tenant, and inside a room per queue and per job.
//!
//! The reader blocks on `XREAD` on a connection of its own (a blocking read on
//! the shared multiplexed connection would stall every other command), keeps the
//! last entry id it dispatched, and after a Redis outage reconnects with backoff
//! and carries on from that id. Each member gets a bounded queue (`WS_BUFFER`
//! events); a member whose queue is full when an event comes is dropped from its
//! room at once and told so (it closes with 1013): the reader never waits for
//! anyone, so one slow client cannot delay the others, and the server never
//! buffers more than a queue per client.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use serde::Serialize;
use shared::events::{EventId, JobEvent, parse_entry};
use shared::store::{JobStore, event_body, last_event_of};
use tokio::sync::{mpsc, watch};

/// How long one XREAD blocks before the reader checks it is still wanted.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries per XREAD. An entry holds one script call's events (up to a batch
/// of 1,000), so this bounds a read to a few MB; and since most entries hold a
/// few events, it must be large enough for the reader to keep up: at 5,000
/// jobs/s the scripts write about 15,000 entries a second, which reads of 4
/// could not follow (events fell hundreds of ms behind).
const ENTRIES_PER_READ: usize = 16;

/// XREAD's answer for one stream: its key and its entries (id, field/value list).
type StreamReply = (String, Vec<(String, Vec<String>)>);

/// One event, serialized once for every member that receives it.
#[derive(Debug)]
pub struct HubEvent {
    pub id: EventId,
    pub tenant: String,
    pub job_id: String,
    pub queue: String,
    /// The `{"op":"event",…}` message.
    pub json: Utf8Bytes,
    pub event: JobEvent,
}

impl HubEvent {
    pub fn new(event: JobEvent) -> Option<Self> {
        #[derive(Serialize)]
        struct Wire<'a> {
            op: &'static str,
            #[serde(flatten)]
            event: &'a JobEvent,
        }
        let id = EventId::parse(&event.id)?;
        let json = serde_json::to_string(&Wire { op: "event", event: &event }).ok()?;
        Some(Self {
            id,
            tenant: event.tenant.clone(),
            job_id: event.job_id.clone(),
            queue: event.queue.clone(),
            json: json.into(),
            event,
        })
    }
}

/// What a member listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every job of the tenant.
    All,
    Queue(String),
    Job(String),
}

impl Target {
    pub fn matches(&self, event: &HubEvent) -> bool {
        match self {
            Self::All => true,
            Self::Queue(queue) => *queue == event.queue,
            Self::Job(job) => *job == event.job_id,
        }
    }
}

/// The hub, shared by every connection of one API instance. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<Rooms>,
    next_member: AtomicU64,
    /// Per-member queue bound, in messages.
    buffer: usize,
    started: OnceLock<()>,
}

#[derive(Default)]
struct Rooms {
    by_tenant: HashMap<String, Room>,
    /// The last event dispatched: a member added now receives every later one.
    dispatched: EventId,
}

#[derive(Default)]
struct Room {
    members: HashMap<u64, Member>,
    all: HashSet<u64>,
    queues: HashMap<String, HashSet<u64>>,
    jobs: HashMap<String, HashSet<u64>>,
}

struct Member {
    tx: mpsc::Sender<Arc<HubEvent>>,
    overflow: watch::Sender<bool>,
    /// What it listens to, so leaving touches only its own entries in the indexes.
    targets: HashSet<Target>,
}

impl Room {
    fn index(&mut self, target: &Target) -> &mut HashSet<u64> {
        match target {
            Target::All => &mut self.all,
            Target::Queue(queue) => self.queues.entry(queue.clone()).or_default(),
            Target::Job(job) => self.jobs.entry(job.clone()).or_default(),
        }
    }

    fn unindex(&mut self, id: u64, target: &Target) {
        match target {
            Target::All => {
                self.all.remove(&id);
            }
            Target::Queue(queue) => remove_from(&mut self.queues, queue, id),
            Target::Job(job) => remove_from(&mut self.jobs, job, id),
        }
    }

    fn drop_member(&mut self, id: u64) {
        if let Some(member) = self.members.remove(&id) {
            for target in &member.targets {
                self.unindex(id, target);
            }
        }
    }
}

fn remove_from(index: &mut HashMap<String, HashSet<u64>>, key: &str, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// A connection's place in its tenant's room; leaves the room when dropped.
pub struct Membership {
    hub: Hub,
    id: u64,
    tenant: String,
}

/// What a new member receives.
pub struct Joined {
    pub membership: Membership,
    pub events: mpsc::Receiver<Arc<HubEvent>>,
    /// Turns `true` when the member's queue overflowed and it was dropped.
    pub overflow: watch::Receiver<bool>,
}

impl Hub {
    pub fn new(buffer: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                rooms: Mutex::default(),
                next_member: AtomicU64::new(1),
                buffer,
                started: OnceLock::new(),
            }),
        }
    }

    /// Starts the Redis reader (once): it runs until the last clone of the hub is dropped.
    ///
    /// Where it starts reading is settled here, before the store is handed to
    /// requests (the caller sets it after this returns), so that no member can join
    /// before that point and miss an event added in between.
    pub async fn start(&self, store: &JobStore, redis_url: &str) {
        if self.inner.started.set(()).is_err() {
            return;
        }
        let start = match newest_entry(&mut store.connection(), &store.keys().events()).await {
            Ok((entry, last)) => {
                self.rooms().dispatched = last;
                Some(entry)
            }
            Err(err) => {
                tracing::warn!(error = %err, "events reader cannot read the stream's end yet");
                None
            }
        };
        tokio::spawn(read_stream(Arc::downgrade(&self.inner), store.clone(), redis_url.to_owned(), start));
    }

    /// Joins `tenant`'s room, listening to nothing yet.
    pub fn join(&self, tenant: &str) -> Joined {
        let id = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(self.inner.buffer);
        let (overflow_tx, overflow) = watch::channel(false);
        self.rooms()
            .by_tenant
            .entry(tenant.to_owned())
            .or_default()
            .members
            .insert(id, Member { tx, overflow: overflow_tx, targets: HashSet::new() });
        Joined { membership: Membership { hub: self.clone(), id, tenant: tenant.to_owned() }, events, overflow }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Membership {
    /// Starts delivering `target`'s events; returns the last event dispatched before,
    /// so every later one arrives through the member's queue.
    pub fn add(&self, target: &Target) -> EventId {
        let mut rooms = self.hub.rooms();
        let dispatched = rooms.dispatched;
        if let Some(room) = rooms.by_tenant.get_mut(&self.tenant)
            && let Some(member) = room.members.get_mut(&self.id)
        {
            member.targets.insert(target.clone());
            room.index(target).insert(self.id);
        }
        dispatched
    }

    pub fn remove(&self, target: &Target) {
        if let Some(room) = self.hub.rooms().by_tenant.get_mut(&self.tenant)
            && let Some(member) = room.members.get_mut(&self.id)
            && member.targets.remove(target)
        {
            room.unindex(self.id, target);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = self.hub.rooms();
        if let Some(room) = rooms.by_tenant.get_mut(&self.tenant) {
            room.drop_member(self.id);
            if room.members.is_empty() {
                rooms.by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl Inner {
    /// Hands each event to the members whose targets it matches, once each,
    /// without waiting: a member whose queue is full is evicted there and then.
    fn dispatch(&self, events: impl Iterator<Item = JobEvent>, last: EventId) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut recipients = Vec::new();
        for event in events {
            // Serialized only when someone of its tenant listens.
            let Some(room) = rooms.by_tenant.get_mut(&event.tenant) else { continue };
            let Some(event) = HubEvent::new(event).map(Arc::new) else { continue };
            recipients.clear();
            recipients.extend(room.all.iter().copied());
            recipients.extend(room.queues.get(&event.queue).into_iter().flatten().copied());
            recipients.extend(room.jobs.get(&event.job_id).into_iter().flatten().copied());
            recipients.sort_unstable();
            recipients.dedup();
            for id in &recipients {
                let Some(member) = room.members.get(id) else { continue };
                match member.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Too slow: stop feeding it; it closes with 1013 and can resume with `since`.
                        member.overflow.send_replace(true);
                        room.drop_member(*id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => room.drop_member(*id),
                }
            }
        }
        rooms.dispatched = rooms.dispatched.max(last);
    }

    /// Every member closes with 1013, as if too slow, and can resume with `since`.
    fn evict_all(&self) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for room in std::mem::take(&mut rooms.by_tenant).into_values() {
            for member in room.members.values() {
                member.overflow.send_replace(true);
            }
        }
    }
}

/// The reader: XREAD BLOCK from the last entry dispatched, for as long as the hub lives.
async fn read_stream(hub: Weak<Inner>, store: JobStore, redis_url: String, start: Option<String>) {
    let key = store.keys().events();
    let mut last_entry = start;
    let mut delay = Duration::from_millis(100);
    loop {
        if hub.strong_count() == 0 {
            return;
        }
        let mut conn = match connect(&redis_url).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "events reader cannot reach redis");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Some(last) = &last_entry
            && let Some(hub) = hub.upgrade()
        {
            match trimmed_past(&mut conn, &key, last).await {
                Ok(false) => {}
                Ok(true) => {
                    // Events trimmed while Redis was away cannot be delivered: every member
                    // closes with 1013 and resumes with `since`, which says `gap` if it must.
                    tracing::warn!(last, "the events stream was trimmed past the reader during an outage");
                    hub.evict_all();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "events reader cannot read the stream's start");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        if last_entry.is_none() {
            // Start from the stream's end: members get history through `since`, not from here.
            match newest_entry(&mut conn, &key).await {
                Ok(newest) => {
                    if let Some(hub) = hub.upgrade() {
                        let mut rooms = hub.rooms.lock().unwrap_or_else(|p| p.into_inner());
                        rooms.dispatched = newest.1;
                    }
                    last_entry = Some(newest.0);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "events reader cannot read the stream's end");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        delay = Duration::from_millis(100);
        loop {
            let from = last_entry.clone().unwrap_or_else(|| "0-0".into());
            let reply: redis::RedisResult<Option<Vec<StreamReply>>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(ENTRIES_PER_READ)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key)
                .arg(&from)
                .query_async(&mut conn)
                .await;
            let entries = match reply {
                Ok(streams) => streams.into_iter().flatten().flat_map(|(_, entries)| entries).collect::<Vec<_>>(),
                Err(err) => {
                    tracing::warn!(error = %err, "events reader lost redis; reconnecting");
                    tokio::time::sleep(delay).await;
                    break;
                }
            };
            let Some(hub) = hub.upgrade() else { return };
            let Some((newest, fields)) = entries.last() else { continue };
            let last = last_event_of(newest, fields);
            last_entry = Some(newest.clone());
            hub.dispatch(entries.iter().flat_map(|(id, fields)| parse_entry(id, event_body(fields))), last);
        }
    }
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await
}

/// Whether the reader may have missed entries after `last`: the stream's first
/// entry is newer than `last` (trimming took what came after it), or the stream
/// went back in time (a Redis restart that lost its tail) or is gone. A reader
/// that had read nothing (`0-0`) cannot tell trimmed entries from none.
async fn trimmed_past(conn: &mut MultiplexedConnection, key: &str, last: &str) -> redis::RedisResult<bool> {
    let order = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse::<u64>().unwrap_or(0), seq.parse::<u64>().unwrap_or(0))
    };
    let last = order(last);
    let exists: bool = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
    if !exists {
        return Ok(last > (0, 0));
    }
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO").arg("STREAM").arg(key).query_async(conn).await?;
    let generated = info
        .get("last-generated-id")
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        .map_or((0, 0), |id| order(&id));
    let first = info
        .get("first-entry")
        .and_then(|v| redis::from_redis_value::<(String, Vec<String>)>(v.clone()).ok())
        .map(|(id, _)| order(&id));
    Ok(generated < last || (last > (0, 0) && first.is_some_and(|first| first > last)))
}

/// The stream's last entry id and last event id (`0-0` when empty).
async fn newest_entry(conn: &mut impl ConnectionLike, key: &str) -> redis::RedisResult<(String, EventId)> {
    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    Ok(entries.first().map_or(("0-0".into(), EventId::ZERO), |(id, fields)| (id.clone(), last_event_of(id, fields))))
}
