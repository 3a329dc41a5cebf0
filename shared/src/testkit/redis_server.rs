//! A `redis-server` child process per test: its own port and data directory, with
//! the append-only file on as in production, so a test can SIGKILL it, restart it
//! on the same port, and check what survived the crash.
//!
//! Readiness is probed over a plain `TcpStream` (not the async client) so the
//! harness works from sync and async tests alike.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// How long a fresh server gets to answer PING (AOF replay included).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports `start` tries: another process may take the port `free_port` saw free.
const START_ATTEMPTS: u32 = 5;
/// How long `restart` keeps retrying the *same* port, which some other process
/// may briefly hold after the kill.
const RESTART_RETRY_FOR: Duration = Duration::from_secs(5);
/// Connect/read/write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Redis writes its own log here (in the data dir), quoted when start-up fails.
const LOG_FILE: &str = "redis.log";
/// Start-up errors before logging is set up (bad arguments) go to stderr, kept here.
const STDERR_FILE: &str = "redis.stderr";

/// A `redis-server` on `127.0.0.1:<port>` with AOF (`everysec`) in a temporary
/// directory. Dropping it kills the process and deletes the directory.
pub struct RedisServer {
    port: u16,
    /// Pid of the current child, or of the last one after [`RedisServer::kill`].
    pid: u32,
    /// `None` while killed.
    child: Option<Child>,
    /// Extra `redis-server` arguments, kept across restarts (`--replicaof …`).
    extra: Vec<String>,
    /// Kept across restarts so the AOF is reloaded; declared last so it is
    /// removed only after `Drop` has killed the process using it.
    dir: TempDir,
}

/// Why one attempt to spawn a ready server failed.
enum SpawnError {
    /// `redis-server` is not on PATH: no retry will help.
    NotInstalled,
    /// The process exited during start-up, most often because the port was taken.
    Exited(String),
    /// Anything else (no PONG in time, I/O on the log files): retrying is pointless.
    Fatal(String),
}

impl RedisServer {
    /// Spawns `redis-server` on a free port and waits until it answers PING.
    ///
    /// # Panics
    /// If `redis-server` is not on PATH or does not become ready within 10 s.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A replica of the Redis on `127.0.0.1:<primary_port>` (`--replicaof`; the
    /// port may be a proxy's), returned once its first sync is done.
    ///
    /// # Panics
    /// As [`RedisServer::start`], or if the sync takes over 10 s.
    pub fn start_replica_of(primary_port: u16) -> Self {
        let replica = Self::start_with(vec!["--replicaof".into(), "127.0.0.1".into(), primary_port.to_string()]);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !command_reply(replica.port, "INFO replication")
            .is_some_and(|info| info.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "testkit: the replica on port {} never synced", replica.port);
            thread::sleep(PROBE_INTERVAL);
        }
        replica
    }

    /// Turns a replica into a primary (`REPLICAOF NO ONE`), as a failover does.
    pub fn promote(&self) {
        let reply = command_reply(self.port, "REPLICAOF NO ONE");
        assert!(reply.as_deref().is_some_and(|r| r.starts_with("+OK")), "testkit: promote failed: {reply:?}");
    }

    /// [`RedisServer::start`] with more `redis-server` arguments, kept across
    /// restarts; a later argument overrides the harness's (`--appendfsync always`).
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::start_with(args.iter().map(|a| (*a).to_owned()).collect())
    }

    fn start_with(extra: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("testkit-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create a temp dir for redis-server: {e}"));
        let mut last_exit = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_ready(port, dir.path(), &extra) {
                Ok(child) => return Self { port, pid: child.id(), child: Some(child), extra, dir },
                Err(SpawnError::Exited(why)) => last_exit = why,
                Err(e) => fail(e),
            }
        }
        panic!("testkit: redis-server exited during start-up {START_ATTEMPTS} times; last: {last_exit}")
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pid of the running server (or of the last one, once killed).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The data directory (AOF and log), stable across restarts.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the server — a crash, not a shutdown: nothing is flushed beyond
    /// what AOF `everysec` has already written — and reaps it. No-op if killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only if the child already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs the server: it stops answering, but connections stay open and
    /// whatever clients send meanwhile is run, in order, once it is thawed, as
    /// after a long `DEBUG SLEEP`.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONTs a frozen server.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("testkit: cannot run kill: {e}"));
        assert!(status.success(), "testkit: kill {signal} {} failed", self.pid);
    }

    /// Kills the server if it is running, then starts a new one on the same port
    /// and directory, so the AOF is replayed; returns once it answers PING.
    ///
    /// # Panics
    /// If the port stays taken for 5 s or the server does not become ready.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + RESTART_RETRY_FOR;
        loop {
            match spawn_ready(self.port, self.dir.path(), &self.extra) {
                Ok(child) => {
                    self.pid = child.id();
                    self.child = Some(child);
                    return;
                }
                Err(SpawnError::Exited(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => fail(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fail(error: SpawnError) -> ! {
    match error {
        SpawnError::NotInstalled => panic!(
            "testkit: `redis-server` is not on PATH; install it (e.g. `apt-get install redis-server`) \
             or run `.ci/run`, which does"
        ),
        SpawnError::Exited(why) | SpawnError::Fatal(why) => panic!("testkit: redis-server: {why}"),
    }
}

/// Spawns `redis-server` on `port` with data in `dir` and waits until it is
/// the process answering PING there.
fn spawn_ready(port: u16, dir: &Path, extra: &[String]) -> Result<Child, SpawnError> {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(dir.join(STDERR_FILE))
        .map_err(|e| SpawnError::Fatal(format!("cannot open {STDERR_FILE}: {e}")))?;
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
        .args(["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""])
        // Fault injection (`DEBUG SLEEP`) from the tests, which connect over loopback.
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(LOG_FILE))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SpawnError::NotInstalled),
        Err(e) => return Err(SpawnError::Fatal(format!("cannot spawn: {e}"))),
    };

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(SpawnError::Exited(format!("exited ({status}) on port {port}; {}", log_tail(dir))));
            }
            Ok(None) => {}
            Err(e) => return Err(SpawnError::Fatal(format!("cannot poll the child: {e}"))),
        }
        // Checking the pid, not just PONG: a stranger that grabbed the port first
        // would answer too, while our process is about to exit on EADDRINUSE.
        if probe(port) == Some(child.id()) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Fatal(format!(
                "no PONG on port {port} within {READY_TIMEOUT:?}; {}",
                log_tail(dir)
            )));
        }
        thread::sleep(PROBE_INTERVAL);
    }
}

/// Sends `PING` and `INFO server`; returns the server's pid once PING gets
/// `+PONG` (a server still replaying its AOF answers `-LOADING`).
fn probe(port: u16) -> Option<u32> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(b"PING\r\nINFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with('-') {
            return None;
        }
        if text.starts_with("+PONG\r\n")
            && let Some(pid) = parse_process_id(&text)
        {
            return Some(pid);
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        reply.extend_from_slice(&chunk[..read]);
    }
}

/// Sends one inline command and returns what arrives within a moment (a short
/// reply, or the start of a long one); `None` if the server does not answer.
fn command_reply(port: u16, line: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut chunk = [0u8; 8192];
    let read = stream.read(&mut chunk).ok()?;
    Some(String::from_utf8_lossy(&chunk[..read]).into_owned())
}

/// The `process_id` field of an `INFO` reply, once its line is complete.
fn parse_process_id(info: &str) -> Option<u32> {
    const FIELD: &str = "process_id:";
    let rest = &info[info.find(FIELD)? + FIELD.len()..];
    rest[..rest.find("\r\n")?].parse().ok()
}

/// The end of Redis's log and stderr, for a start-up failure message.
fn log_tail(dir: &Path) -> String {
    const KEEP: usize = 1500;
    let mut out = String::new();
    for name in [LOG_FILE, STDERR_FILE] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let mut start = text.len().saturating_sub(KEEP);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        out.push_str(&format!("--- {name} ---\n{}\n", text[start..].trim_end()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one inline command and reads a reply that contains `expect`.
    fn command(port: u16, line: &str, expect: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.write_all(format!("{line}\r\n").as_bytes()).expect("write");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 512];
        while !String::from_utf8_lossy(&reply).contains(expect) {
            let read = stream.read(&mut chunk).expect("read");
            assert!(read > 0, "connection closed; got {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&chunk[..read]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[test]
    fn process_id_is_read_from_a_complete_info_line_only() {
        assert_eq!(parse_process_id("+PONG\r\n$9\r\nprocess_id:42\r\nrun_id"), Some(42));
        assert_eq!(parse_process_id("+PONG\r\n$9\r\nprocess_id:42"), None);
        assert_eq!(parse_process_id("+PONG\r\n"), None);
    }

    #[test]
    fn a_killed_server_restarts_on_the_same_port_with_its_aof_data() {
        let mut redis = RedisServer::start();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        command(redis.port(), "SET testkit-key survives", "+OK");
        // SIGKILL keeps what reached the kernel, but `everysec` may postpone the
        // write() itself by up to a second while an fsync is pending.
        thread::sleep(Duration::from_millis(1100));
        let first_pid = redis.pid();

        redis.kill();
        assert!(TcpStream::connect(("127.0.0.1", redis.port())).is_err(), "still listening");
        redis.restart();

        assert_ne!(redis.pid(), first_pid);
        assert!(command(redis.port(), "GET testkit-key", "survives").contains("survives"));
    }
}
