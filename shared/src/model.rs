//! The job record and status model, as stored in Redis and shown by the API.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub queue: String,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub timeout_ms: u64,
    /// Set when cancellation was requested while the job was running.
    pub cancel_requested: bool,
}

/// One transition in a job's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub status: JobStatus,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

impl JobRecord {
    /// Builds a record from its Redis hash; `None` when the hash is empty or damaged.
    pub fn from_hash(fields: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| fields.get(name).map(String::as_str);
        let millis = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok()).map(from_millis);
        let number = |name: &str| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Self {
            id: get("id")?.to_owned(),
            tenant: get("tenant")?.to_owned(),
            kind: get("type")?.to_owned(),
            queue: get("queue")?.to_owned(),
            status: get("status")?.parse().ok()?,
            attempts: number("attempts"),
            max_attempts: number("max_attempts"),
            payload: serde_json::from_str(get("payload")?).ok()?,
            created_at: millis("created_at")?,
            scheduled_at: millis("scheduled_at"),
            started_at: millis("started_at"),
            finished_at: millis("finished_at"),
            last_error: get("last_error").filter(|e| !e.is_empty()).map(str::to_owned),
            result: get("result").and_then(|r| serde_json::from_str(r).ok()),
            timeout_ms: number("timeout_ms") as u64,
            cancel_requested: get("cancel_requested") == Some("1"),
        })
    }

    /// The history entries (`h:1`, `h:2`, …) of a record hash, oldest first.
    pub fn history_from_hash(fields: &HashMap<String, String>) -> Vec<HistoryEntry> {
        let count: usize = fields.get("hist_n").and_then(|n| n.parse().ok()).unwrap_or(0);
        (1..=count).filter_map(|n| fields.get(&format!("h:{n}"))).filter_map(|line| parse_history(line)).collect()
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
    fn history_lines_parse_with_and_without_error() {
        let ok = parse_history("running\t2\t1700000000000\t").unwrap();
        assert_eq!((ok.status, ok.attempt, ok.error), (JobStatus::Running, 2, None));
        let err = parse_history("retrying\t1\t1700000000000\tboom: a\tb").unwrap();
        assert_eq!(err.error.as_deref(), Some("boom: a\tb"));
        assert!(parse_history("bogus\t1\t0\t").is_none());
    }
}
