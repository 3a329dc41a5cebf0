//! The harness's own `redis-server`: a free loopback port, a temporary data
//! directory, pinned to the Redis CPU. Persistence is off for throughput runs
//! (`--save "" --appendonly no`); `--durable` turns on the append-only file
//! with `everysec` fsync, as production runs it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

use crate::procs::{ChildGuard, CpuOf, free_port, pinned_command};

/// Fresh ports tried: another process may take the one `free_port` saw free.
const START_ATTEMPTS: u32 = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether Redis writes an append-only file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Persistence {
    /// `--save "" --appendonly no`: nothing touches the disk.
    Off,
    /// `--appendonly yes --appendfsync everysec`, automatic rewrites as configured by default.
    AofEverysec,
}

pub struct BenchRedis {
    port: u16,
    process: ChildGuard,
    /// Removed after the process is killed (fields drop in order).
    _dir: TempDir,
}

impl BenchRedis {
    /// Starts a server and waits until it answers PING.
    pub async fn start(persistence: Persistence, cpu: Option<usize>) -> anyhow::Result<Self> {
        Self::start_with(persistence, cpu, &[]).await
    }

    /// A replica of `primary` on the same CPU (`--replicaof`), once its first sync is done.
    pub async fn start_replica_of(primary: &BenchRedis, cpu: Option<usize>) -> anyhow::Result<Self> {
        let port = primary.port.to_string();
        let replica = Self::start_with(Persistence::Off, cpu, &["--replicaof", "127.0.0.1", &port]).await?;
        let mut conn = replica.connect().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
            if info.contains("master_link_status:up") {
                return Ok(replica);
            }
            if Instant::now() > deadline {
                bail!("the replica on port {} did not sync within {READY_TIMEOUT:?}", replica.port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_with(persistence: Persistence, cpu: Option<usize>, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("bench-redis-").tempdir().context("cannot create a temp dir")?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut command = pinned_command("redis-server", cpu);
            command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"]);
            command.args(["--save", "", "--maxmemory-policy", "noeviction"]);
            match persistence {
                Persistence::Off => command.args(["--appendonly", "no"]),
                Persistence::AofEverysec => command.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
            };
            command.arg("--dir").arg(dir.path()).arg("--logfile").arg(dir.path().join("redis.log"));
            command.args(extra);
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let mut process = ChildGuard::spawn("redis-server", command)?;
            match wait_ready(port, &mut process).await {
                Ok(()) => return Ok(Self { port, process, _dir: dir }),
                Err(err) => last = format!("{err:#}"),
            }
        }
        let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
        bail!("redis-server did not start in {START_ATTEMPTS} attempts: {last}\n{log}")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cpu_of(&self) -> CpuOf {
        CpuOf::Pid(self.process.pid())
    }

    pub async fn connect(&self) -> anyhow::Result<MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// FLUSHALL, then waits (bounded) until no AOF rewrite or snapshot runs, so a
    /// run never shares the Redis CPU with a fork left over from the previous one.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let mut conn = self.connect().await?;
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info: String = redis::cmd("INFO").arg("persistence").query_async(&mut conn).await?;
            let busy = info
                .lines()
                .any(|line| matches!(line.trim(), "aof_rewrite_in_progress:1" | "rdb_bgsave_in_progress:1"));
            if !busy || Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis-server --version`, for the report.
    pub fn version() -> String {
        std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.split_whitespace().find_map(|w| w.strip_prefix("v=").map(str::to_owned)))
            .unwrap_or_else(|| "unknown".into())
    }
}

async fn wait_ready(port: u16, process: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        if let Some(status) = process.exited() {
            bail!("redis-server exited ({status}) on port {port}");
        }
        if let Ok(client) = redis::Client::open(url.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && let Ok(pid) = redis_pid(&mut conn).await
            && pid == process.pid()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer on port {port} within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's pid: a stranger that grabbed the port first would answer PING too.
async fn redis_pid(conn: &mut MultiplexedConnection) -> anyhow::Result<u32> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("process_id:")?.parse().ok())
        .context("INFO server has no process_id")
}
