//! API configuration: environment variables with matching flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use shared::config::{DemoArgs, LogArgs, RedisArgs, RetentionArgs};

/// The HTTP front door. With no subcommand it serves until SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(name = "api", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: ApiConfig,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Apply pending Redis schema migrations, then exit.
    Migrate,
    /// Print a signed token for local use (HS256 with JWT_SECRET, or EdDSA/RS256
    /// with --private-key-file), e.g. `api token --tenant acme --scope "jobs:write jobs:read" --ttl 1h`.
    Token(TokenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The tenant the token acts for.
    #[arg(long)]
    pub tenant: String,
    /// Space-separated scopes: jobs:write, jobs:read, email:send, admin.
    #[arg(long, default_value = "jobs:write jobs:read")]
    pub scope: String,
    /// Who the token is for (`sub`).
    #[arg(long, default_value = "cli")]
    pub subject: String,
    /// How long the token is valid, e.g. 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// PEM private key for EdDSA or RS256.
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
}

/// The algorithm every token must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "RS256")]
    Rs256,
}

/// How tokens are verified. Every `/v1` route needs one.
#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// HS256 secret, at least 32 bytes.
    #[arg(long, env = "JWT_SECRET", value_name = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<SecretString>,
    /// Algorithm tokens must use; any other is refused.
    #[arg(long, env = "JWT_ALGORITHM", value_name = "JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM public key (EdDSA or RS256).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", value_name = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE", value_name = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", value_name = "JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub jwt_leeway_secs: u64,
    /// Longest life a token may have (`exp` − `iat`, or − now without `iat`), seconds.
    #[arg(long, env = "JWT_MAX_TTL_SECS", value_name = "JWT_MAX_TTL_SECS", default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub jwt_max_ttl_secs: u64,
    /// The tenant whose `admin` tokens operate the deployment: they see every
    /// tenant's queue counts, queue latency, the workers and `/metrics`. Any other
    /// tenant's `admin` token sees only that tenant. Unset: no operator.
    #[arg(long, env = "ADMIN_TENANT", value_name = "ADMIN_TENANT")]
    pub admin_tenant: Option<String>,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// Per-tenant limit on job submission: a token bucket kept in Redis, shared by
/// every API instance. A batch counts as its number of jobs.
#[derive(Args, Debug, Clone)]
pub struct RateLimitArgs {
    /// Jobs per second a tenant may submit on average (0 = no limit).
    #[arg(long, env = "RATE_LIMIT_PER_SEC", value_name = "RATE_LIMIT_PER_SEC", default_value_t = 1_000)]
    pub rate_limit_per_sec: u32,
    /// Jobs a tenant may submit at once: the bucket's size. At least the largest batch (1,000).
    #[arg(long, env = "RATE_LIMIT_BURST", value_name = "RATE_LIMIT_BURST", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1_000..))]
    pub rate_limit_burst: u32,
}

/// `GET /v1/events`: live status over WebSocket and Server-Sent Events.
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Seconds between the server's pings; a client that misses two pongs is closed.
    #[arg(long, env = "WS_PING_SECS", value_name = "WS_PING_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ws_ping_secs: u64,
    /// Events queued for one connection before it is closed as too slow (1013).
    /// The queue holds references to events every connection shares, so a full
    /// one costs 8 bytes a slot; it must hold a burst (a batch of 1,000 jobs is
    /// 1,000 events at once).
    #[arg(long, env = "WS_BUFFER", value_name = "WS_BUFFER", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub ws_buffer: u64,
    /// Seconds one write to an event connection may take before the connection
    /// is closed as stuck (1013).
    #[arg(long, env = "WS_WRITE_TIMEOUT_SECS", value_name = "WS_WRITE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ws_write_timeout_secs: u64,
    /// Event connections (WebSocket and SSE) this API instance holds at most;
    /// past it, `503 too_many_connections`.
    #[arg(long, env = "WS_MAX_CONNECTIONS", value_name = "WS_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ws_max_connections: u64,
    /// Event connections one tenant may hold on this API instance; past it,
    /// `429 too_many_connections`.
    #[arg(long, env = "WS_MAX_PER_TENANT", value_name = "WS_MAX_PER_TENANT", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ws_max_per_tenant: u64,
    /// Events a replay (`since`) reads at most; a client further behind gets
    /// `gap` and goes on from the live stream.
    #[arg(long, env = "EVENTS_REPLAY_MAX", value_name = "EVENTS_REPLAY_MAX", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub events_replay_max: u64,
    /// Replays (`since`) one tenant may have running at once on this API
    /// instance; past it, `429 too_many_replays`.
    #[arg(long, env = "EVENTS_REPLAYS_PER_TENANT", value_name = "EVENTS_REPLAYS_PER_TENANT", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub events_replays_per_tenant: u64,
    /// Comma-separated origins (`https://ops.example.com`) whose pages may open the
    /// event stream, besides the API's own.
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ApiConfig {
    /// Set by `dev` (not a flag): the defaults of a local trial (demo types on,
    /// the dev tenant its operator).
    #[arg(skip)]
    pub dev: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub rate_limit: RateLimitArgs,
    #[command(flatten)]
    pub events: EventsArgs,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", value_name = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,
    #[command(flatten)]
    pub durability: DurabilityArgs,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", value_name = "MAX_BODY_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub max_body_bytes: u64,
}

/// What one tenant may take of what all share.
#[derive(Args, Debug, Clone)]
pub struct IsolationArgs {
    /// The queues jobs may name, comma-separated; empty = any (within TENANT_MAX_QUEUES).
    #[arg(long, env = "QUEUES_ALLOWED", value_name = "QUEUES_ALLOWED", value_delimiter = ',')]
    pub queues_allowed: Vec<String>,
    /// Distinct queues one tenant may have jobs in at once; past it `422 too_many_queues`.
    #[arg(long, env = "TENANT_MAX_QUEUES", value_name = "TENANT_MAX_QUEUES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tenant_max_queues: u32,
    /// Live (queued, scheduled, running, retrying) jobs one tenant may have; past it
    /// `429 quota_exceeded`. 0 = no cap.
    #[arg(long, env = "TENANT_MAX_LIVE_JOBS", value_name = "TENANT_MAX_LIVE_JOBS", default_value_t = 1_000_000)]
    pub tenant_max_live_jobs: u64,
    /// Bytes of stored jobs (payloads with their settings, live or kept after they
    /// end) one tenant may have; past it `429 quota_exceeded`. 0 = no cap.
    #[arg(long, env = "TENANT_MAX_BYTES", value_name = "TENANT_MAX_BYTES", default_value_t = 268_435_456)]
    pub tenant_max_bytes: u64,
    /// Percent of Redis's `maxmemory` past which new jobs get `503 storage_full`
    /// (workers go on claiming and finishing, which frees memory).
    #[arg(long, env = "STORAGE_HIGH_WATER_PERCENT", value_name = "STORAGE_HIGH_WATER_PERCENT", default_value_t = 85, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub storage_high_water_percent: u64,
    /// Largest payload of one job, as JSON text, in bytes; past it `413 payload_too_large`.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", value_name = "MAX_PAYLOAD_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(2..=16_777_216))]
    pub max_payload_bytes: u64,
    /// Domains `email.send` may write to, comma-separated: `example.com` allows that
    /// domain, `*.example.com` its subdomains. Empty = any (set it for any
    /// deployment whose tenants are not all yours).
    #[arg(long, env = "EMAIL_ALLOWED_DOMAINS", value_name = "EMAIL_ALLOWED_DOMAINS", value_delimiter = ',', value_parser = parse_domain)]
    pub email_allowed_domains: Vec<String>,
    /// Recipients one tenant's `email.send` jobs may address in a UTC day; past it
    /// `429 quota_exceeded`. 0 = no cap.
    #[arg(long, env = "EMAIL_DAILY_RECIPIENTS", value_name = "EMAIL_DAILY_RECIPIENTS", default_value_t = 10_000)]
    pub email_daily_recipients: u64,
}

/// An `EMAIL_ALLOWED_DOMAINS` entry, lower-cased: a domain, or `*.` and a domain.
fn parse_domain(raw: &str) -> Result<String, String> {
    let domain = raw.trim().to_ascii_lowercase();
    let bare = domain.strip_prefix("*.").unwrap_or(&domain);
    let label_ok = |label: &str| {
        !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if bare.split('.').all(label_ok) && bare.contains('.') {
        Ok(domain)
    } else {
        Err(format!("`{raw}` is not a domain name such as example.com or *.example.com"))
    }
}

/// What a submission waits for before its `202`, beyond Redis's memory.
#[derive(Args, Debug, Clone)]
pub struct DurabilityArgs {
    /// Replicas that must hold a new job before the API answers 202 (Redis `WAIT`);
    /// 0 = none. Makes a failover to a replica lose no acknowledged job.
    #[arg(long, env = "ENQUEUE_WAIT_REPLICAS", value_name = "ENQUEUE_WAIT_REPLICAS", default_value_t = 0)]
    pub enqueue_wait_replicas: u32,
    /// Also wait until the job is in the primary's fsynced append-only file
    /// (`WAITAOF`, Redis 7.2 or newer): a crash of the primary's host loses no
    /// acknowledged job.
    #[arg(long, env = "ENQUEUE_WAIT_AOF", value_name = "ENQUEUE_WAIT_AOF", default_value_t = false, action = clap::ArgAction::Set)]
    pub enqueue_wait_aof: bool,
    /// Longest wait, in ms; past it the answer is `503 not_replicated`.
    #[arg(long, env = "ENQUEUE_WAIT_TIMEOUT_MS", value_name = "ENQUEUE_WAIT_TIMEOUT_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub enqueue_wait_timeout_ms: u64,
}

impl DurabilityArgs {
    pub fn durability(&self) -> shared::store::Durability {
        shared::store::Durability {
            replicas: self.enqueue_wait_replicas,
            local_aof: self.enqueue_wait_aof,
            timeout: std::time::Duration::from_millis(self.enqueue_wait_timeout_ms),
        }
    }
}

impl ApiConfig {
    /// Defaults as if no variable were set, for tests and tools.
    pub fn defaults() -> Self {
        Cli::parse_from(["api"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let err = Cli::try_parse_from(["api", "--bind-addr", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("BIND_ADDR"), "{err}");
        let err = Cli::try_parse_from(["api", "--redis-prefix", "a b"]).unwrap_err().to_string();
        assert!(err.contains("REDIS_PREFIX"), "{err}");
    }
}
