//! An example deployment of durable-jobs: a team's own job type, `partner.reserve`,
//! which reserves stock at a partner through the partner's HTTP API.
//!
//! Everything a deployment writes is here: the payload (validated by the API
//! before anything is stored), the handler (run by the workers, retried with
//! backoff), and the client it needs, given to the workers once and read by
//! type ([`PartnerApi`] through `ctx.get`). `main.rs` turns it into one binary
//! with the product's command line: `partner-sync api …` and `partner-sync worker …`.

use std::time::Duration;

use serde::Deserialize;
use shared::backoff::Backoff;
use shared::jobs::{JobContext, JobDefaults, JobError, JobType, Needs, Registry};

/// The partner's API: a shared HTTP client and where the partner is.
#[derive(Clone)]
pub struct PartnerApi {
    http: reqwest::Client,
    base: String,
}

impl PartnerApi {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
        Self { http, base: base.into().trim_end_matches('/').to_owned() }
    }

    /// From `PARTNER_URL`.
    pub fn from_env() -> anyhow::Result<Self> {
        let base = std::env::var("PARTNER_URL")
            .map_err(|_| anyhow::anyhow!("set PARTNER_URL to the partner's API, e.g. https://partner.example.com"))?;
        Ok(Self::new(base))
    }
}

/// `partner.reserve` — `{"sku": "BOLT-M8", "quantity": 40}`: reserves stock.
/// `garde` checks the payload; the `schema` bounds say the same in `/openapi.json`.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    /// The partner's stock-keeping unit: A-Z, 0-9 and `-`.
    #[garde(length(min = 1, max = 32), custom(sku_characters))]
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Z0-9-]+$")]
    pub sku: String,
    #[garde(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: u32,
}

fn sku_characters(sku: &str, _: &()) -> garde::Result {
    match sku.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-') {
        true => Ok(()),
        false => Err(garde::Error::new("a SKU is made of A-Z, 0-9 and -")),
    }
}

impl JobType for Reserve {
    const NAME: &'static str = "partner.reserve";

    fn defaults() -> JobDefaults {
        JobDefaults {
            queue: "partner",
            max_attempts: 6,
            timeout: Duration::from_secs(30),
            backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60) },
        }
    }

    fn needs(needs: &mut Needs) {
        needs.service::<PartnerApi>();
    }

    async fn run(self, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        let partner = ctx.get::<PartnerApi>()?;
        // Every run of this job sends the same key, so a retry after a lost
        // answer cannot reserve twice (delivery is at-least-once).
        let response = partner
            .http
            .post(format!("{}/reservations", partner.base))
            .header("idempotency-key", &ctx.id)
            .json(&serde_json::json!({ "sku": self.sku, "quantity": self.quantity }))
            .send()
            .await
            .map_err(|err| JobError::Retryable(format!("the partner is unreachable: {err}")))?;
        let status = response.status();
        if status.is_success() {
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|err| JobError::Retryable(format!("the partner's answer is not JSON: {err}")))?;
            return Ok(serde_json::json!({ "reservation": body["id"], "attempt": ctx.attempt }));
        }
        let message = format!("the partner answered {status}");
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(JobError::Retryable(message))
        } else {
            Err(JobError::Permanent(message))
        }
    }
}

/// Adds this deployment's types to a registry (the shipped ones, for the binaries).
pub fn register(registry: Registry) -> Registry {
    registry.register::<Reserve>()
}
