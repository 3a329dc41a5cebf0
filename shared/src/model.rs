//! The job record and status model, as stored in Redis and shown by the API.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting on its queue's ready list.
    Queued,
    /// Waiting for its first run at `scheduled_at`.
    Scheduled,
    /// Leased to a worker.
    Running,
    /// An attempt failed; waiting for the next one at `scheduled_at`.
    Retrying,
    Succeeded,
    /// Out of attempts, or failed permanently.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] =
        [Self::Queued, Self::Scheduled, Self::Running, Self::Retrying, Self::Succeeded, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// A job as the API shows it. Every field is always present (one that does not
/// apply yet is `null`), but for `payload`, which listings and snapshots carry
/// only when asked.
// Hence `required` on the `Option` fields, which utoipa would otherwise leave optional.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobRecord {
    /// UUIDv7, so ids sort by creation time.
    pub id: String,
    pub tenant: String,
    /// The job type, e.g. `email.send`.
    #[serde(rename = "type")]
    pub kind: String,
    pub queue: String,
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The payload as submitted; its shape depends on `type`. Listings and
    /// event snapshots leave it out unless asked (`include=payload`).
    #[schema(value_type = Object)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// When the job is next due: its first run, or its next attempt while `retrying`.
    #[schema(required)]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Start of the latest attempt.
    #[schema(required)]
    pub started_at: Option<DateTime<Utc>>,
    /// Set once the job is `succeeded`, `failed` or `cancelled`.
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The most recent failure.
    #[schema(required)]
    pub last_error: Option<String>,
    /// What the handler returned, once succeeded.
    #[schema(required)]
    pub result: Option<serde_json::Value>,
    pub timeout_ms: u64,
    /// Set when cancellation was requested while the job was running.
    pub cancel_requested: bool,
}

/// One transition in a job's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: JobStatus,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// Why the attempt failed; absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// Milliseconds since the Unix epoch, as the scripts store times.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn parse_history(line: &str) -> Option<HistoryEntry> {
    let mut parts = line.splitn(4, '\t');
    let status = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let at = from_millis(parts.next()?.parse().ok()?);
    let error = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
    Some(HistoryEntry { status, attempt, at, error })
}

/// A job's fixed part, as stored in the `spec` column (see `keys.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Seconds the record is kept once the job succeeds (`None`: the deployment's).
    pub retention_secs: Option<u64>,
    pub created_ms: i64,
    /// JSON text.
    pub payload: String,
}

impl Spec {
    /// Reads a spec of ten fields, or of nine (schema 5 and older, without
    /// `retention_secs`): the payload is JSON text, in which a tab is escaped,
    /// so the count of tabs tells them apart.
    pub fn parse(text: &str) -> Option<Self> {
        let f: Vec<&str> = text.splitn(10, '\t').collect();
        let (retention, created, payload) = match f.len() {
            10 => (f[7], f[8], f[9]),
            9 => ("", f[7], f[8]),
            _ => return None,
        };
        Some(Self {
            tenant: f[0].to_owned(),
            kind: f[1].to_owned(),
            queue: f[2].to_owned(),
            max_attempts: f[3].parse().ok()?,
            timeout_ms: f[4].parse().ok()?,
            backoff_base_ms: f[5].parse().ok()?,
            backoff_cap_ms: f[6].parse().ok()?,
            retention_secs: if retention.is_empty() { None } else { Some(retention.parse().ok()?) },
            created_ms: created.parse().ok()?,
            payload: payload.to_owned(),
        })
    }

    /// `tenant \t type \t queue`: the prefix every event line about this job carries.
    pub fn meta(&self) -> String {
        format!("{}\t{}\t{}", self.tenant, self.kind, self.queue)
    }
}

/// A job's mutable part: the header line of the `state` column (see `keys.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct State {
    pub status: JobStatus,
    /// Attempts that count against `max_attempts`.
    pub attempts: u32,
    pub due_ms: i64,
    pub cancel_requested: bool,
    /// When a finished record is deleted (0 while live).
    pub expires_ms: i64,
    /// Claims ever made of the job: the latest claim's fencing token.
    pub runs: u64,
    /// The id is on its queue's ready list.
    pub listed: bool,
    /// The latest run's outcome would still be recorded.
    pub open: bool,
    /// Transitions ever recorded; the history keeps the last [`HISTORY_KEPT`].
    pub total: u64,
}

/// Transitions a record's history keeps (the scripts' `HISTORY_KEPT`).
pub const HISTORY_KEPT: u64 = 50;

impl State {
    /// Reads a header of schema 4, or of schema 3 (five fields), as the scripts do.
    pub fn parse(header: &str) -> Option<Self> {
        let mut f = header.split('\t');
        let status: JobStatus = f.next()?.parse().ok()?;
        let attempts = f.next()?.parse().ok()?;
        let due_ms = f.next()?.parse().ok()?;
        let cancel_requested = f.next()? == "1";
        let expires_ms = f.next()?.parse().ok()?;
        let mut state = Self {
            status,
            attempts,
            due_ms,
            cancel_requested,
            expires_ms,
            runs: u64::from(attempts),
            listed: status == JobStatus::Queued,
            open: status == JobStatus::Running,
            total: 0,
        };
        if let Some(runs) = f.next() {
            state.runs = runs.parse().ok()?;
            let flags = f.next()?;
            state.listed = flags.contains('l');
            state.open = flags.contains('o');
            state.total = f.next()?.parse().ok()?;
        }
        Some(state)
    }
}

/// A job's history: its last [`HISTORY_KEPT`] transitions, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    /// Older transitions no longer kept.
    pub dropped: u64,
}

impl JobRecord {
    /// Builds a record from its columns; `None` when the record is damaged.
    /// Start, finish and last error come from the history in the state value.
    pub fn from_columns(id: &str, spec: &str, state: &str, result: Option<&str>) -> Option<(Self, History)> {
        let spec = Spec::parse(spec)?;
        let mut lines = state.split('\n');
        let state = State::parse(lines.next()?)?;
        let history: Vec<HistoryEntry> = lines.filter_map(parse_history).collect();
        let dropped = state.total.saturating_sub(history.len() as u64);
        let started_at = history.iter().rev().find(|e| e.status == JobStatus::Running).map(|e| e.at);
        let finished_at = history.last().filter(|e| e.status.is_terminal() && state.status.is_terminal()).map(|e| e.at);
        let last_error = history.iter().rev().find_map(|e| e.error.clone());
        let record = Self {
            id: id.to_owned(),
            tenant: spec.tenant,
            kind: spec.kind,
            queue: spec.queue,
            status: state.status,
            attempts: state.attempts,
            max_attempts: spec.max_attempts,
            // READ's lean mode cuts the payload off.
            payload: if spec.payload.is_empty() { None } else { Some(serde_json::from_str(&spec.payload).ok()?) },
            created_at: from_millis(spec.created_ms),
            scheduled_at: Some(from_millis(state.due_ms)),
            started_at,
            finished_at,
            last_error,
            result: result.and_then(|r| serde_json::from_str(r).ok()),
            timeout_ms: spec.timeout_ms,
            cancel_requested: state.cancel_requested,
        };
        Some((record, History { entries: history, dropped }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn a_record_is_assembled_from_its_columns() {
        let spec = "acme\tnoop\tdefault\t5\t1000\t10\t100\t1700000000000\t{\"a\":\"b\\tc\"}";
        let state = "succeeded\t2\t1700000000019\t0\t0\t2\t\t6\n\
                     queued\t0\t1700000000000\t\nrunning\t1\t1700000000005\t\n\
                     retrying\t1\t1700000000009\tboom\nqueued\t1\t1700000000020\t\n\
                     running\t2\t1700000000021\t\nsucceeded\t2\t1700000000030\t";
        let (record, history) = JobRecord::from_columns("j1", spec, state, Some("42")).unwrap();
        assert_eq!((record.tenant.as_str(), record.attempts, record.max_attempts), ("acme", 2, 5));
        assert_eq!(record.payload, Some(serde_json::json!({"a": "b\tc"})));
        assert_eq!(record.started_at, Some(from_millis(1700000000021)));
        assert_eq!(record.finished_at, Some(from_millis(1700000000030)));
        assert_eq!(record.last_error.as_deref(), Some("boom"));
        assert_eq!(record.result, Some(serde_json::json!(42)));
        assert_eq!((history.entries.len(), history.dropped), (6, 0));
        assert!(JobRecord::from_columns("j1", "garbage", "queued\t0\t0\t0\t0", None).is_none());
    }

    #[test]
    fn headers_of_schema_4_and_schema_3_both_parse() {
        let now = State::parse("running\t2\t5\t1\t0\t7\to\t60").unwrap();
        assert_eq!((now.attempts, now.runs, now.open, now.listed, now.total), (2, 7, true, false, 60));
        assert!(now.cancel_requested);
        let old = State::parse("queued\t3\t5\t0\t0").unwrap();
        assert_eq!((old.runs, old.listed, old.open), (3, true, false), "a schema-3 run is its attempts");
        assert!(State::parse("queued\t3\t5\t0\t0\t3\tl").is_none(), "a cut-off header is damaged");
    }

    #[test]
    fn a_trimmed_history_says_how_much_it_dropped() {
        let spec = "acme\tnoop\tdefault\t5\t1000\t10\t100\t1700000000000\t{}";
        let state = "queued\t0\t1\t0\t0\t0\tl\t81\nqueued\t0\t1700000000001\t";
        let (_, history) = JobRecord::from_columns("j1", spec, state, None).unwrap();
        assert_eq!((history.entries.len(), history.dropped), (1, 80));
    }

    #[test]
    fn history_lines_parse_with_and_without_error() {
        let ok = parse_history("running\t2\t1700000000000\t").unwrap();
        assert_eq!((ok.status, ok.attempt, ok.error), (JobStatus::Running, 2, None));
        let err = parse_history("retrying\t1\t1700000000000\tboom: a\tb").unwrap();
        assert_eq!(err.error.as_deref(), Some("boom: a\tb"));
        assert!(parse_history("bogus\t1\t0\t").is_none());
    }
}
