//! Status events: the lines the scripts append to the events stream.
//!
//! One stream entry carries every transition of one script call (field `e`, one
//! line per transition), so a batch of a thousand claims costs one XADD. An
//! event's id is `<stream entry id>:<line index>`, which orders events totally.
//!
//! A line is `job id \t tenant \t type \t queue \t status \t attempt \t at_ms \t error`,
//! or the job id alone when everything after it is as on the line before: a
//! batch of like jobs then costs the stream (and the script building the
//! entry) an id per job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{JobStatus, from_millis};

/// One status transition of one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobEvent {
    pub id: String,
    pub job_id: String,
    #[serde(skip)]
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub queue: String,
    pub status: JobStatus,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Splits one stream entry (`e` field) into its events.
pub fn parse_entry(entry_id: &str, body: &str) -> Vec<JobEvent> {
    let mut events: Vec<JobEvent> = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let id = format!("{entry_id}:{index}");
        let event = match line.split_once('\t') {
            Some((job_id, rest)) => parse_fields(id, job_id, rest),
            None => events.last().map(|like| JobEvent { id, job_id: line.to_owned(), ..like.clone() }),
        };
        events.extend(event);
    }
    events
}

fn parse_fields(id: String, job_id: &str, rest: &str) -> Option<JobEvent> {
    let mut parts = rest.splitn(7, '\t');
    let tenant = parts.next()?.to_owned();
    let kind = parts.next()?.to_owned();
    let queue = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let at = from_millis(parts.next()?.parse().ok()?);
    let error = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
    Some(JobEvent { id, job_id: job_id.to_owned(), tenant, kind, queue, status, attempt, at, error })
}

/// Makes free text safe to embed in an event or history line.
pub fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// An event's position: `<stream entry id>:<line index>`, ordered as the stream
/// is (entry time, entry sequence, then line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
    pub line: u32,
}

impl EventId {
    /// Before every event.
    pub const ZERO: Self = Self { ms: 0, seq: 0, line: 0 };

    /// Reads `<ms>-<seq>:<line>`; a bare stream entry id (`<ms>-<seq>`) means its line 0.
    pub fn parse(text: &str) -> Option<Self> {
        let (entry, line) = match text.split_once(':') {
            Some((entry, line)) => (entry, line.parse().ok()?),
            None => (text, 0),
        };
        let (ms, seq) = parse_entry_id(entry)?;
        Some(Self { ms, seq, line })
    }

    /// The id of line `line` of stream entry `entry`.
    pub fn of_entry(entry: &str, line: u32) -> Option<Self> {
        let (ms, seq) = parse_entry_id(entry)?;
        Some(Self { ms, seq, line })
    }

    /// The stream entry id, for XRANGE and XREAD.
    pub fn entry(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

fn parse_entry_id(entry: &str) -> Option<(u64, u64)> {
    let (ms, seq) = entry.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}:{}", self.ms, self.seq, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_splits_into_numbered_events() {
        let body = "a\tacme\tnoop\tdefault\tqueued\t0\t1700000000000\t\n\
                    b\tacme\tfail\tdefault\tretrying\t1\t1700000000001\tboom";
        let events = parse_entry("1-0", body);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, "1-0:0");
        assert_eq!(events[1].id, "1-0:1");
        assert_eq!(events[1].status, JobStatus::Retrying);
        assert_eq!(events[1].error.as_deref(), Some("boom"));
    }

    #[test]
    fn an_id_alone_repeats_the_line_before_and_ids_stay_numbered() {
        let body = "a\tacme\tnoop\tdefault\trunning\t1\t1700000000000\t\nb\nc\n\
                    d\tacme\tfail\tdefault\tretrying\t2\t1700000000001\tboom\ne";
        let events = parse_entry("1-0", body);
        let ids: Vec<(&str, &str)> = events.iter().map(|e| (e.id.as_str(), e.job_id.as_str())).collect();
        assert_eq!(ids, [("1-0:0", "a"), ("1-0:1", "b"), ("1-0:2", "c"), ("1-0:3", "d"), ("1-0:4", "e")]);
        assert_eq!(events[2].status, JobStatus::Running);
        assert_eq!((events[2].tenant.as_str(), events[2].attempt), ("acme", 1));
        assert_eq!((events[4].status, events[4].error.as_deref()), (JobStatus::Retrying, Some("boom")));
        // An id alone with nothing before it has nothing to repeat.
        assert!(parse_entry("1-0", "x").is_empty());
    }

    #[test]
    fn event_ids_order_like_the_stream() {
        let a = EventId::parse("1-9:3").unwrap();
        let b = EventId::parse("2-0:0").unwrap();
        let c = EventId::parse("2-0:1").unwrap();
        assert!(a < b && b < c);
        assert_eq!(EventId::parse("2-0"), Some(b));
        assert_eq!(c.to_string(), "2-0:1");
        for bad in ["", "x", "1-", "1-2:", "1-2:x", "-1-2:0"] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_line_strips_separators() {
        assert_eq!(one_line("a\tb\nc\r"), "a b c ");
    }
}
