//! `jobs enqueue --ndjson FILE`: every line a job request, sent through
//! `POST /v1/jobs/batch` in batches of up to 1,000 jobs (and a byte budget under the
//! API's body limit).
//!
//! Each batch carries an `Idempotency-Key` derived from the file, the batch's index and
//! its body, and a refused or unanswered batch is resent byte for byte with the same
//! key: a 429 stores nothing, and a batch whose answer was lost replays instead of
//! doubling. Running the same file again within the API's key TTL therefore replays
//! too; pass `--idempotency-key` to make a deliberate second run new.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::EnqueueArgs;
use super::client::Client;
use super::failure::Failure;
use super::print::progress;

/// Resends of one batch after `429 rate_limited` before giving up on it.
const MAX_RATE_LIMITED: u32 = 100;
/// Resends of one batch after a 503 that invites it, or no answer at all.
const MAX_UNAVAILABLE: u32 = 5;
/// Longest single wait we accept from `Retry-After`.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// `{"jobs":[` and `]}` around the lines.
const ENVELOPE_BYTES: usize = 10;

/// One batch being filled: the raw lines, comma-joined, and where each came from.
#[derive(Default)]
struct Batch {
    joined: String,
    line_numbers: Vec<usize>,
}

impl Batch {
    fn push(&mut self, line_number: usize, job: &str) {
        if !self.joined.is_empty() {
            self.joined.push(',');
        }
        self.joined.push_str(job);
        self.line_numbers.push(line_number);
    }

    fn body(&self) -> String {
        format!("{{\"jobs\":[{}]}}", self.joined)
    }

    /// The body's size with `job` added.
    fn bytes_with(&self, job: &str) -> usize {
        self.joined.len() + 1 + job.len() + ENVELOPE_BYTES
    }
}

#[derive(Default)]
struct Tally {
    jobs: u64,
    batches: u64,
    rate_limited: u64,
    unavailable: u64,
    replayed: u64,
}

pub async fn enqueue(client: &Client, args: &EnqueueArgs) -> Result<(), Failure> {
    let path = args.ndjson.as_deref().ok_or_else(|| Failure::Usage("--ndjson FILE is required".into()))?;
    let unreadable = |err: std::io::Error| Failure::Other(format!("cannot read {}: {err}", path.display()));
    let prefix = match &args.idempotency_key {
        Some(prefix) => prefix.clone(),
        None => format!(
            "bulk-{}",
            short_hash(std::fs::canonicalize(path).unwrap_or(path.into()).as_os_str().as_encoded_bytes())
        ),
    };
    let bar = progress(count_lines(path).map_err(unreadable)?, "lines");
    let mut tally = Tally::default();
    let mut batch = Batch::default();
    let mut first_line = 1;
    let mut line_number = 0;
    for line in BufReader::new(File::open(path).map_err(unreadable)?).lines() {
        line_number += 1;
        let line = line.map_err(unreadable)?;
        let job = line.trim();
        if job.is_empty() {
            continue;
        }
        if let Err(problem) = check(job) {
            bar.abandon();
            let sent = if tally.jobs > 0 {
                format!("; the {} jobs of lines before {first_line} were enqueued", tally.jobs)
            } else {
                String::new()
            };
            let message = format!(
                "{} line {line_number}: {problem}; nothing from line {first_line} on was sent{sent}",
                path.display()
            );
            return Err(Failure::BadInput(message));
        }
        let full = batch.line_numbers.len() >= args.batch_size as usize || batch.bytes_with(job) > args.batch_bytes;
        if !batch.line_numbers.is_empty() && full {
            send(client, &batch, &key(&prefix, tally.batches, &batch), &mut tally, &bar).await?;
            bar.set_position(line_number as u64 - 1);
            batch = Batch::default();
            first_line = line_number;
        }
        batch.push(line_number, job);
    }
    if !batch.line_numbers.is_empty() {
        send(client, &batch, &key(&prefix, tally.batches, &batch), &mut tally, &bar).await?;
    }
    bar.finish_and_clear();
    let mut summary =
        format!("{} jobs enqueued in {} batches, {} retries after 429", tally.jobs, tally.batches, tally.rate_limited);
    if tally.unavailable > 0 {
        summary.push_str(&format!(", {} after 503 or no answer", tally.unavailable));
    }
    if tally.replayed > 0 {
        let replayed = tally.replayed;
        summary.push_str(&format!(
            "; {replayed} batches had been submitted before (same Idempotency-Key) and created nothing new"
        ));
    }
    if client.json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    Ok(())
}

/// A line must be one JSON object; the API checks what is in it.
fn check(job: &str) -> Result<(), String> {
    match serde_json::from_str::<Value>(job) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err("expected a JSON object (a job request such as {\"type\":\"noop\"})".into()),
        Err(err) => {
            let text = err.to_string();
            let reason = text.split(" at line ").next().unwrap_or(&text);
            Err(format!("not valid JSON at column {}: {reason}", err.column()))
        }
    }
}

/// Sends one batch, waiting out rate limits and resending after an unanswered try.
async fn send(client: &Client, batch: &Batch, key: &str, tally: &mut Tally, bar: &ProgressBar) -> Result<(), Failure> {
    let body = batch.body();
    let (mut rate_limited, mut unavailable) = (0, 0);
    loop {
        let failure = match client.post(&["v1", "jobs", "batch"], &[], Some(body.clone()), Some(key)).await {
            Ok(answer) => {
                let ids = answer.json()?.get("ids").and_then(Value::as_array).map_or(0, Vec::len);
                if ids != batch.line_numbers.len() {
                    let message = format!("the API answered {ids} ids for a batch of {}", batch.line_numbers.len());
                    return Err(Failure::Other(message));
                }
                if client.json {
                    bar.suspend(|| println!("{}", answer.body.trim_end()));
                }
                tally.jobs += ids as u64;
                tally.batches += 1;
                tally.replayed += u64::from(answer.replayed);
                return Ok(());
            }
            Err(failure) => failure,
        };
        let wait = if failure.is_api(429, &["rate_limited"]) && rate_limited < MAX_RATE_LIMITED {
            rate_limited += 1;
            tally.rate_limited += 1;
            failure.retry_after().unwrap_or(Duration::from_secs(1))
        } else if resendable(&failure) && unavailable < MAX_UNAVAILABLE {
            unavailable += 1;
            tally.unavailable += 1;
            failure.retry_after().unwrap_or(Duration::from_secs(1 << unavailable.min(4)))
        } else {
            bar.abandon();
            if tally.jobs > 0 {
                eprintln!("{} jobs were enqueued in {} batches before this error", tally.jobs, tally.batches);
            }
            return Err(locate(failure, batch));
        };
        let wait = wait.min(MAX_WAIT);
        bar.set_message(format!("({}: waiting {}s)", reason(&failure), wait.as_secs()));
        tokio::time::sleep(wait).await;
        bar.set_message("");
    }
}

/// Failures after which the same request with the same key is safe and may succeed.
fn resendable(failure: &Failure) -> bool {
    matches!(failure, Failure::Unreachable(_))
        || failure.is_api(503, &["unavailable", "outcome_unknown", "not_replicated"])
}

fn reason(failure: &Failure) -> String {
    match failure {
        Failure::Api { code, .. } => code.clone(),
        _ => "no answer".into(),
    }
}

/// Adds the file's line number to an error whose field is `jobs[i]…`.
fn locate(failure: Failure, batch: &Batch) -> Failure {
    let Failure::Api { status, code, message, field, retry_after } = failure else { return failure };
    let index = field.as_deref().and_then(|field| field.strip_prefix("jobs[")?.split(']').next()?.parse().ok());
    let message = match index.and_then(|index: usize| batch.line_numbers.get(index)) {
        Some(line) => format!("{message} (line {line})"),
        None => message,
    };
    Failure::Api { status, code, message, field, retry_after }
}

/// `<prefix>-<batch index>-<hash of the body>`: the same batch of the same file keeps its
/// key across resends and runs, and an edited batch never collides with its old key.
fn key(prefix: &str, index: u64, batch: &Batch) -> String {
    format!("{prefix}-{index}-{}", short_hash(batch.joined.as_bytes()))
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Lines in the file (a last line without `\n` counts), for the progress bar's length.
fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0; 64 * 1024];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(lines + u64::from(last != b'\n'));
        }
        lines += buffer[..read].iter().filter(|byte| **byte == b'\n').count() as u64;
        last = buffer[read - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_must_be_a_json_object() {
        assert!(check(r#"{"type":"noop"}"#).is_ok());
        assert!(check("[1]").unwrap_err().contains("JSON object"));
        let error = check(r#"{"type": nope}"#).unwrap_err();
        assert!(error.starts_with("not valid JSON at column 1"), "{error}");
    }

    #[test]
    fn a_batch_error_names_the_line_of_the_job_at_fault() {
        let mut batch = Batch::default();
        batch.push(4, r#"{"type":"noop"}"#);
        batch.push(9, r#"{"type":"sleep"}"#);
        assert_eq!(batch.body(), r#"{"jobs":[{"type":"noop"},{"type":"sleep"}]}"#);
        let failure = Failure::from_answer(
            422,
            br#"{"code":"validation_failed","message":"missing field `ms`",
            "field":"jobs[1].payload"}"#,
            None,
        );
        let located = locate(failure, &batch).to_string();
        assert_eq!(located, "validation_failed: missing field `ms` (line 9) (field jobs[1].payload)");
    }

    #[test]
    fn a_batch_key_depends_on_its_index_and_body() {
        let mut one = Batch::default();
        one.push(1, r#"{"type":"noop"}"#);
        let mut other = Batch::default();
        other.push(1, r#"{"type":"fail"}"#);
        assert_eq!(key("p", 0, &one), key("p", 0, &one));
        assert_ne!(key("p", 0, &one), key("p", 1, &one));
        assert_ne!(key("p", 0, &one), key("p", 0, &other));
    }
}
