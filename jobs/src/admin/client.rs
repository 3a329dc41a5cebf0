//! The HTTP side: one `reqwest` client with the token and timeouts, URLs built from
//! path segments (so ids and queue names are escaped), and every non-2xx answer turned
//! into a [`Failure`] carrying the API's `{code, message, field}` and `Retry-After`.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::ApiArgs;
use super::failure::{Failure, parse_retry_after};

/// A slow API should not hang a script forever, but a batch of 1,000 jobs on a busy
/// deployment can take a few seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<SecretString>,
    /// Print answers as they came (`--json`).
    pub json: bool,
}

/// A 2xx answer: its status and body as received.
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// `Idempotent-Replayed: true`: an earlier request with this key made the job(s).
    pub replayed: bool,
}

impl Answer {
    pub fn json(&self) -> Result<Value, Failure> {
        serde_json::from_str(&self.body).map_err(|err| {
            Failure::Other(format!("the API answered {} with a body that is not JSON: {err}", self.status))
        })
    }
}

impl Client {
    pub fn new(args: &ApiArgs) -> Result<Self, Failure> {
        let base = Url::parse(args.base.trim_end_matches('/'))
            .map_err(|err| Failure::Usage(format!("--api {}: {err}", args.base)))?;
        if base.scheme() != "http" {
            let message = format!("--api {}: only http:// is supported (this build has no TLS)", args.base);
            return Err(Failure::Usage(message));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("jobs-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Failure::Other(format!("cannot set up the HTTP client: {err}")))?;
        let token = args.token.clone().filter(|token| !token.is_empty()).map(SecretString::from);
        Ok(Self { http, base, token, json: args.json })
    }

    /// `base` + `/`-joined `segments`, each escaped.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The `Authorization` header value, for the WebSocket upgrade.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {}", token.expose_secret()))
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Answer, Failure> {
        self.send(self.http.get(self.url(segments)).query(query)).await
    }

    /// POSTs `body` (JSON text; none is an empty body) with an optional `Idempotency-Key`.
    pub async fn post(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Failure> {
        let mut request = self.http.post(self.url(segments)).query(query);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    async fn send(&self, mut request: RequestBuilder) -> Result<Answer, Failure> {
        if let Some(bearer) = self.bearer() {
            request = request.header(AUTHORIZATION, bearer);
        }
        let response = request.send().await.map_err(|err| unreachable(&err))?;
        let status = response.status().as_u16();
        let header = |name| response.headers().get(name).and_then(|value| value.to_str().ok());
        let retry_after = parse_retry_after(header(RETRY_AFTER.as_str()));
        let replayed = header("idempotent-replayed") == Some("true");
        let body = response.bytes().await.map_err(|err| unreachable(&err))?;
        if !(200..300).contains(&status) {
            return Err(Failure::from_answer(status, &body, retry_after));
        }
        Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned(), replayed })
    }
}

/// No answer. reqwest's own message stops at "error sending request for url (…)"; the
/// innermost cause says why (connection refused, timed out).
fn unreachable(err: &reqwest::Error) -> Failure {
    let mut reason = if err.is_timeout() { "timed out".to_owned() } else { err.to_string() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    match err.url() {
        Some(url) => Failure::Unreachable(format!("{url}: {reason}")),
        None => Failure::Unreachable(reason),
    }
}
