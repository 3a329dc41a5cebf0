//! Reading the events stream for live subscribers: snapshots taken atomically
//! with the stream's position, and history pages for resuming.

use crate::error::StoreResult;
use crate::events::{EventId, JobEvent, parse_entry};
use crate::model::JobRecord;

use super::{JobStore, Payloads, record_of};

/// Records read together with the stream's position at that instant.
pub struct Snapshot {
    /// The last event the records already reflect (`EventId::ZERO` when the stream is empty).
    pub as_of: EventId,
    /// One per requested id: `None` when unknown, expired or another tenant's.
    pub records: Vec<Option<JobRecord>>,
}

impl JobStore {
    /// Reads `ids` and the stream's last entry in the same instant (one script
    /// call), so every event after `as_of` is a change the records do not show
    /// yet, and every event up to it is one they do.
    pub async fn snapshot(&self, tenant: &str, ids: &[String], payloads: Payloads) -> StoreResult<Snapshot> {
        let mut reply = self.read(ids, payloads, true).await?;
        let body = reply.pop().flatten();
        let entry = reply.pop().flatten();
        let as_of = entry.map_or(EventId::ZERO, |entry| {
            let fields = ["e".to_owned(), body.unwrap_or_default()];
            last_event_of(&entry, &fields)
        });
        let records = ids
            .iter()
            .zip(reply.chunks(3))
            .map(|(id, columns)| record_of(id, columns).map(|(r, _)| r).filter(|r| r.tenant == tenant))
            .collect();
        Ok(Snapshot { as_of, records })
    }

    /// Up to `count` stream entries from entry `from` (inclusive), as events, oldest first.
    /// Returns the events and the id of the last entry read (`None` when none was).
    pub async fn events_from(&self, from: &str, count: usize) -> StoreResult<(Vec<JobEvent>, Option<String>)> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(self.keys.events())
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn.clone())
            .await?;
        let last = entries.last().map(|(id, _)| id.clone());
        let events = entries.iter().flat_map(|(id, fields)| parse_entry(id, body(fields))).collect();
        Ok((events, last))
    }

    /// The first event the stream still keeps, `None` when it is empty.
    pub async fn oldest_event(&self) -> StoreResult<Option<EventId>> {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(self.keys.events())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entries.first().and_then(|(id, _)| EventId::of_entry(id, 0)))
    }
}

/// The `e` field of an entry's field/value list.
pub fn body(fields: &[String]) -> &str {
    fields.chunks(2).find(|pair| pair[0] == "e").and_then(|pair| pair.get(1)).map_or("", String::as_str)
}

/// The id of an entry's last event.
pub fn last_event_of(entry: &str, fields: &[String]) -> EventId {
    let lines = body(fields).lines().count().max(1) as u32;
    EventId::of_entry(entry, lines - 1).unwrap_or(EventId::ZERO)
}
