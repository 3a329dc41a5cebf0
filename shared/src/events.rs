//! Status events: the lines the scripts append to the events stream.
//!
//! One stream entry carries every transition of one script call (field `e`, one
//! line per transition), so a batch of a thousand claims costs one XADD. An
//! event's id is `<stream entry id>:<line index>`, which orders events totally.

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
    body.lines().enumerate().filter_map(|(index, line)| parse_line(&format!("{entry_id}:{index}"), line)).collect()
}

fn parse_line(id: &str, line: &str) -> Option<JobEvent> {
    let mut parts = line.splitn(8, '\t');
    let job_id = parts.next()?.to_owned();
    let tenant = parts.next()?.to_owned();
    let kind = parts.next()?.to_owned();
    let queue = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    let at = from_millis(parts.next()?.parse().ok()?);
    let error = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
    Some(JobEvent { id: id.to_owned(), job_id, tenant, kind, queue, status, attempt, at, error })
}

/// Makes free text safe to embed in an event or history line.
pub fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
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
    fn one_line_strips_separators() {
        assert_eq!(one_line("a\tb\nc\r"), "a b c ");
    }
}
