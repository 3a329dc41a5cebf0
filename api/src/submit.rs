//! Turning submitted JSON into validated jobs: the request schema, its limits,
//! the payload check against the job type, and the idempotency fingerprint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::jobs::{EmailSend, JobType as _, Registry};
use shared::store::{NewJob, When};

use crate::error::ApiError;

/// Most jobs in one batch request.
pub const MAX_BATCH: usize = 1_000;
/// Furthest in the future a job may be scheduled.
const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most attempts a job may ask for.
const MAX_ATTEMPTS: u32 = 100;
/// Longest timeout a job may ask for (the worker's ceiling).
const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest a succeeded record may be asked to be kept.
const MAX_RETENTION_SECS: u64 = 366 * 24 * 3600;

/// What every submission is checked against.
pub struct Rules {
    pub registry: Registry,
    /// Every queue a job may name (`QUEUES_ALLOWED`); empty = any.
    pub queues_allowed: Vec<String>,
    /// Largest payload, as JSON text (`MAX_PAYLOAD_BYTES`).
    pub max_payload_bytes: usize,
    /// Where `email.send` may write (`EMAIL_ALLOWED_DOMAINS`, lower case, `*.`
    /// for subdomains); empty = anywhere.
    pub email_allowed_domains: Vec<String>,
}

/// Who submits: the tenant, and whether it may send mail (`email:send`).
#[derive(Debug, Clone, Copy)]
pub struct Submitter<'a> {
    pub tenant: &'a str,
    pub may_email: bool,
}

impl Rules {
    /// Whether mail to `address` may go out: its domain is allowed, or no list is set.
    fn allows_recipient(&self, address: &str) -> Result<(), String> {
        if self.email_allowed_domains.is_empty() {
            return Ok(());
        }
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).trim_end_matches('>').to_ascii_lowercase();
        let allowed = self.email_allowed_domains.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(parent) => domain.strip_suffix(parent).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => domain == *entry,
        });
        if allowed { Ok(()) } else { Err(domain) }
    }

    /// For an `email.send` payload: checks the submitter may send it and every
    /// recipient is allowed, and returns how many recipients it addresses.
    fn check_email(&self, who: Submitter<'_>, payload: &serde_json::Value, at: &str) -> Result<u32, ApiError> {
        if !who.may_email {
            return Err(ApiError::Forbidden(
                "email.send jobs need the `email:send` scope (or `admin`) besides `jobs:write`".into(),
            ));
        }
        let recipients = EmailSend::recipients(payload);
        for (index, address) in recipients.iter().enumerate() {
            self.allows_recipient(address).map_err(|domain| ApiError::RecipientNotAllowed {
                field: format!("{at}payload.to[{index}]"),
                domain,
            })?;
        }
        Ok(recipients.len() as u32)
    }
}

/// `POST /v1/jobs` body.
// The `#[schema]` limits mirror `validate` (utoipa takes only literals there);
// `the_documented_limits_are_the_enforced_ones` keeps them equal to the constants.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "email.send",
    "payload": {"to": "ada@example.org", "subject": "Welcome", "text": "Hello Ada"}}))]
pub struct JobRequest {
    /// The job type. Shipped types: `email.send`, and the demo types `noop`, `sleep` and
    /// `fail` (off when the server runs with `DEMO_JOBS=false`). Other names get 422 `unknown_type`.
    #[serde(rename = "type")]
    #[schema(example = "email.send")]
    pub kind: String,
    /// A JSON object whose shape depends on `type`; unknown fields are rejected:
    /// - `email.send`: `to` (an address, or a list of 1–50), `subject` (1–998 characters),
    ///   `text`, `html` (optional).
    /// - `noop`: `{}`.
    /// - `sleep`: `ms` (0–60,000), `panic` (optional bool).
    /// - `fail`: `times` (0–1,000 attempts to fail), `permanent` (optional bool).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Defaults to the type's queue (`email` for `email.send`, `default` otherwise).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub queue: Option<String>,
    /// Run this many milliseconds from now (at most 366 days); not together with `run_at`.
    #[schema(maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Run at this time (RFC 3339, at most 366 days ahead; a past time means now);
    /// not together with `delay_ms`.
    pub run_at: Option<DateTime<Utc>>,
    /// Defaults to the type's (5; `email.send` 8).
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Per-attempt timeout; defaults to the type's (300,000; `email.send` 60,000).
    #[schema(minimum = 1, maximum = 86_400_000_u64)]
    pub timeout_ms: Option<u64>,
    /// Backoff before the first retry; doubles each attempt (full jitter).
    #[schema(maximum = 86_400_000_u64)]
    pub backoff_base_ms: Option<u64>,
    /// Longest backoff between attempts; at least `backoff_base_ms`.
    #[schema(maximum = 86_400_000_u64)]
    pub backoff_cap_ms: Option<u64>,
    /// Seconds the record is kept once the job succeeds; `0` deletes it at once.
    /// Defaults to the deployment's `SUCCEEDED_TTL_SECS` (24 h). Failed and
    /// cancelled records keep `FAILED_TTL_SECS`.
    #[schema(maximum = 31_622_400_u64)]
    pub retention_secs: Option<u64>,
}

/// `POST /v1/jobs/batch` body: validated all-or-nothing, stored in one round trip.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<JobRequest>,
}

/// The `Idempotency-Key` header both submit routes accept (see [`idempotency_key`]).
/// Only documents the header: the handlers read it from the `HeaderMap`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// A bare token or an RFC 8941 string (`"…"`) of 1–255 printable ASCII characters, sent once.
    /// The same key with the same body replays the original answer (`Idempotent-Replayed: true`);
    /// with another body it gets 422 `idempotency_key_reused`. Kept per tenant for 24 h by default.
    #[param(rename = "Idempotency-Key", nullable = false, example = "signup-42")]
    pub idempotency_key: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Parses a JSON body: malformed JSON is a 400, a well-formed body of the wrong
/// shape is a 422 naming the field.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| ApiError::MalformedJson(err.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, err.into_inner().to_string())
    })
}

/// A hash of what was asked, so a replayed key can be told from a reused one.
/// `serde_json` maps are sorted, so key order and whitespace do not matter.
pub fn fingerprint(route: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
    hex::encode(Sha256::new().chain_update(route).chain_update([0]).chain_update(canonical).finalize())
}

/// Checks an `Idempotency-Key` value: an RFC 8941 string (`"…"`) or a bare token, 1–255 printable characters.
pub fn idempotency_key(raw: &str) -> Result<String, ApiError> {
    let key = raw.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(raw);
    let valid = !key.is_empty() && key.len() <= 255 && key.chars().all(|c| c.is_ascii_graphic() && c != '"');
    if valid {
        Ok(key.to_owned())
    } else {
        Err(ApiError::BadParameter {
            field: "Idempotency-Key".into(),
            message: "use 1-255 printable ASCII characters".into(),
        })
    }
}

/// A queue name: 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_queue(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validates one request into a job; `at` prefixes field names (`jobs[3].`).
pub fn validate(rules: &Rules, who: Submitter<'_>, request: JobRequest, at: &str) -> Result<NewJob, ApiError> {
    let (registry, queues_allowed) = (&rules.registry, &rules.queues_allowed);
    let field = |name: &str| format!("{at}{name}");
    let defaults = registry.defaults(&request.kind).ok_or_else(|| ApiError::UnknownType(request.kind.clone()))?;
    let payload = request.payload.to_string();
    if payload.len() > rules.max_payload_bytes {
        return Err(ApiError::PayloadOverLimit { field: field("payload"), limit: rules.max_payload_bytes });
    }
    if let Some(Err(err)) = registry.validate(&request.kind, &request.payload) {
        return Err(ApiError::invalid(format!("{at}{}", err.field), err.message));
    }
    let recipients = if request.kind == EmailSend::NAME { rules.check_email(who, &request.payload, at)? } else { 0 };
    let queue = request.queue.unwrap_or_else(|| defaults.queue.to_owned());
    if !valid_queue(&queue) {
        return Err(ApiError::invalid(field("queue"), "use 1-64 characters from [A-Za-z0-9._-]"));
    }
    if !queues_allowed.is_empty() && !queues_allowed.contains(&queue) {
        return Err(ApiError::QueueNotAllowed { field: field("queue"), queue });
    }
    let when = match (request.delay_ms, request.run_at) {
        (Some(_), Some(_)) => return Err(ApiError::invalid(field("run_at"), "give delay_ms or run_at, not both")),
        (Some(delay), None) if delay > MAX_DELAY.as_millis() as u64 => {
            return Err(ApiError::invalid(field("delay_ms"), "at most one year"));
        }
        (Some(0), None) | (None, None) => When::Now,
        (Some(delay), None) => When::After(delay),
        (None, Some(at)) => {
            if at > Utc::now() + MAX_DELAY {
                return Err(ApiError::invalid(field("run_at"), "at most one year ahead"));
            }
            When::At(at.timestamp_millis())
        }
    };
    let max_attempts = request.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(ApiError::invalid(field("max_attempts"), format!("between 1 and {MAX_ATTEMPTS}")));
    }
    let timeout_ms = request.timeout_ms.unwrap_or(defaults.timeout.as_millis() as u64);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ApiError::invalid(field("timeout_ms"), format!("between 1 and {MAX_TIMEOUT_MS}")));
    }
    let backoff_base_ms = request.backoff_base_ms.unwrap_or(defaults.backoff.base.as_millis() as u64);
    let backoff_cap_ms = request.backoff_cap_ms.unwrap_or(defaults.backoff.cap.as_millis() as u64);
    if backoff_cap_ms < backoff_base_ms || backoff_cap_ms > MAX_TIMEOUT_MS {
        return Err(ApiError::invalid(field("backoff_cap_ms"), "at least backoff_base_ms and at most one day"));
    }
    if request.retention_secs.is_some_and(|secs| secs > MAX_RETENTION_SECS) {
        return Err(ApiError::invalid(field("retention_secs"), "at most 366 days"));
    }
    Ok(NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: who.tenant.to_owned(),
        kind: request.kind,
        queue,
        payload,
        max_attempts,
        timeout_ms,
        when,
        backoff_base_ms,
        backoff_cap_ms,
        retention_secs: request.retention_secs,
        recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> JobRequest {
        serde_json::from_value(json).unwrap()
    }

    fn rules(email_allowed_domains: &[&str]) -> Rules {
        Rules {
            registry: Registry::standard(true),
            queues_allowed: Vec::new(),
            max_payload_bytes: 64 << 10,
            email_allowed_domains: email_allowed_domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn check(json: serde_json::Value) -> Result<NewJob, ApiError> {
        validate(&rules(&[]), Submitter { tenant: "t", may_email: true }, request(json), "")
    }

    #[test]
    fn allowed_domains_match_exactly_or_by_wildcard_for_subdomains() {
        let rules = rules(&["example.com", "*.corp.example"]);
        assert!(rules.allows_recipient("a@example.com").is_ok());
        assert!(rules.allows_recipient("a@EXAMPLE.com").is_ok());
        assert_eq!(rules.allows_recipient("a@mail.example.com"), Err("mail.example.com".into()));
        assert!(rules.allows_recipient("a@eu.corp.example").is_ok());
        assert!(rules.allows_recipient("a@corp.example").is_err(), "the wildcard is for subdomains only");
        assert!(rules.allows_recipient("a@evilcorp.example").is_err());
        assert!(rules.allows_recipient("a@example.com.evil.org").is_err());
    }

    #[test]
    fn email_needs_its_scope_and_counts_its_recipients() {
        let mail = serde_json::json!({"type": "email.send",
            "payload": {"to": ["a@example.com", "b@example.com"], "subject": "s", "text": "t"}});
        let job = validate(&rules(&[]), Submitter { tenant: "t", may_email: true }, request(mail.clone()), "").unwrap();
        assert_eq!(job.recipients, 2);
        let err = validate(&rules(&[]), Submitter { tenant: "t", may_email: false }, request(mail), "").unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
        assert_eq!(check(serde_json::json!({"type": "noop"})).unwrap().recipients, 0);
    }

    #[test]
    fn a_valid_request_takes_its_type_defaults() {
        let job = check(serde_json::json!({"type": "noop"})).unwrap();
        assert_eq!((job.queue.as_str(), job.max_attempts, job.when), ("default", 5, When::Now));
        let mail =
            check(serde_json::json!({"type": "email.send", "payload": {"to": "a@b.co", "subject": "s", "text": "t"}}))
                .unwrap();
        assert_eq!(mail.queue, "email");
    }

    #[test]
    fn errors_name_the_field() {
        let err = check(serde_json::json!({"type": "sleep", "payload": {"ms": "x"}})).unwrap_err();
        assert!(matches!(err, ApiError::Invalid { ref field, .. } if field == "payload.ms"), "{err:?}");
        let err = check(serde_json::json!({"type": "noop", "max_attempts": 0})).unwrap_err();
        assert!(matches!(err, ApiError::Invalid { ref field, .. } if field == "max_attempts"));
        let err = check(serde_json::json!({"type": "noop", "queue": "a b"})).unwrap_err();
        assert!(matches!(err, ApiError::Invalid { ref field, .. } if field == "queue"));
        assert!(matches!(check(serde_json::json!({"type": "nope"})), Err(ApiError::UnknownType(_))));
    }

    #[test]
    fn fingerprints_ignore_key_order_and_whitespace() {
        let a = fingerprint("jobs", br#"{"type":"noop","payload":{"a":1,"b":2}}"#);
        let b = fingerprint("jobs", br#"{ "payload": {"b": 2, "a": 1}, "type": "noop" }"#);
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("jobs", br#"{"type":"noop","payload":{"a":1}}"#));
        assert_ne!(a, fingerprint("batch", br#"{"type":"noop","payload":{"a":1,"b":2}}"#));
    }

    #[test]
    fn the_documented_limits_are_the_enforced_ones() {
        use utoipa::PartialSchema;
        let job = serde_json::to_value(JobRequest::schema()).unwrap();
        let bound = |field: &str, bound: &str| job["properties"][field][bound].as_f64();
        assert_eq!(bound("max_attempts", "minimum"), Some(1.0));
        assert_eq!(bound("max_attempts", "maximum"), Some(f64::from(MAX_ATTEMPTS)));
        assert_eq!(bound("timeout_ms", "minimum"), Some(1.0));
        assert_eq!(bound("timeout_ms", "maximum"), Some(MAX_TIMEOUT_MS as f64));
        assert_eq!(bound("backoff_cap_ms", "maximum"), Some(MAX_TIMEOUT_MS as f64));
        assert_eq!(bound("delay_ms", "maximum"), Some(MAX_DELAY.as_millis() as f64));
        assert_eq!(job["properties"]["queue"]["maxLength"], 64);
        let batch = serde_json::to_value(BatchRequest::schema()).unwrap();
        assert_eq!(batch["properties"]["jobs"]["minItems"], 1);
        assert_eq!(batch["properties"]["jobs"]["maxItems"], MAX_BATCH);
    }

    #[test]
    fn idempotency_keys_accept_quoted_and_bare_forms() {
        assert_eq!(idempotency_key("\"abc-1\"").unwrap(), "abc-1");
        assert_eq!(idempotency_key("abc-1").unwrap(), "abc-1");
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key("has space").is_err());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
    }
}
