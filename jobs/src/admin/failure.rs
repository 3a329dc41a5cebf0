//! Why a command failed, and the exit code each reason maps to, so scripts can tell
//! "not found" from "not allowed" from "try later" without parsing messages.

use std::time::Duration;

/// Exit code for input the user handed us that is not valid (sysexits' `EX_DATAERR`).
pub const EXIT_BAD_INPUT: u8 = 65;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The API answered with an error status; `code`, `message` and `field` are its body's.
    #[error("{code}: {message}{}", field.as_ref().map(|field| format!(" (field {field})")).unwrap_or_default())]
    Api { status: u16, code: String, message: String, field: Option<String>, retry_after: Option<Duration> },
    /// No answer at all: connection refused or reset, or a timeout.
    #[error("unavailable: {0}")]
    Unreachable(String),
    /// The events socket was closed by the server with a code this client does not resume after.
    #[error("closed: the API closed the event stream with {code} {reason}")]
    Closed { code: u16, reason: String },
    /// A payload or an NDJSON line is not valid JSON of the expected shape.
    #[error("bad_input: {0}")]
    BadInput(String),
    /// An option's value that parsing could not catch (an unusable `--api` URL).
    #[error("usage: {0}")]
    Usage(String),
    /// Anything else: a local file that cannot be read, an answer that makes no sense.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// 3 not found, 4 auth, 5 refused as invalid, 6 rate limited or over quota,
    /// 7 unavailable, 65 bad input, 2 usage, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { status, .. } => match status {
                404 => 3,
                401 | 403 => 4,
                400 | 409 | 413 | 422 => 5,
                429 => 6,
                503 => 7,
                _ => 1,
            },
            Self::Unreachable(_) => 7,
            // 1008: the token expired while the socket was open (or we sent too much).
            Self::Closed { code: 1008, .. } => 4,
            Self::Closed { .. } | Self::Other(_) => 1,
            Self::BadInput(_) => EXIT_BAD_INPUT,
            Self::Usage(_) => 2,
        }
    }

    /// An answer the API refused with `status` and `code` (both must match).
    pub fn is_api(&self, status: u16, codes: &[&str]) -> bool {
        matches!(self, Self::Api { status: s, code, .. } if *s == status && codes.contains(&code.as_str()))
    }

    /// How long the API asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The API's error for an answer with `status` and `body` (its problem JSON, or
    /// whatever came when it was not).
    pub fn from_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |name: &str| problem.get(name).and_then(|value| value.as_str()).map(str::to_owned);
        let message = text("message").unwrap_or_else(|| {
            let body = String::from_utf8_lossy(body);
            let body = body.trim();
            if body.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {body}") }
        });
        Self::Api {
            status,
            code: text("code").unwrap_or_else(|| format!("http_{status}")),
            message,
            field: text("field"),
            retry_after,
        }
    }
}

/// `Retry-After` in whole seconds (the only form the API sends).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value.and_then(|value| value.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_prints_code_message_and_field_on_one_line() {
        let body = br#"{"code":"validation_failed","message":"expected u64","field":"payload.ms"}"#;
        let failure = Failure::from_answer(422, body, None);
        assert_eq!(failure.to_string(), "validation_failed: expected u64 (field payload.ms)");
        assert_eq!(failure.exit_code(), 5);
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        for (status, code) in [(404, 3), (401, 4), (403, 4), (400, 5), (409, 5), (413, 5), (429, 6), (503, 7), (500, 1)]
        {
            assert_eq!(Failure::from_answer(status, b"", None).exit_code(), code, "status {status}");
        }
    }

    #[test]
    fn a_body_that_is_not_a_problem_still_names_the_status() {
        let failure = Failure::from_answer(502, b"bad gateway", None);
        assert_eq!(failure.to_string(), "http_502: HTTP 502: bad gateway");
    }
}
