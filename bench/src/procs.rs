//! Child processes the harness starts (redis-server, api, worker, peers), pinned
//! to a CPU with `taskset`, and the CPU time a process has used.
//!
//! Every child is killed when its handle drops, so an error or a panic anywhere
//! in a run leaves no stray process behind. Only processes started here are
//! ever signalled, and only by their own pid.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Which CPU each side runs on; `None` leaves placement to the scheduler.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Pinning {
    pub redis_cpu: Option<usize>,
    pub sut_cpu: Option<usize>,
    /// Where the harness itself runs (results written before this field existed: with the SUT).
    #[serde(default)]
    pub harness_cpu: Option<usize>,
}

impl Pinning {
    pub const NONE: Pinning = Pinning { redis_cpu: None, sut_cpu: None, harness_cpu: None };
}

/// A command line, run under `taskset -c <cpu>` when a CPU is given. `taskset`
/// execs the program, so the child's pid is the program's own.
pub fn pinned_command(program: impl AsRef<Path>, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program.as_ref());
            command
        }
        None => Command::new(program.as_ref()),
    }
}

/// Pins every thread of this process to `cpu` (threads started later inherit it).
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset (util-linux); use --no-pin to run unpinned")?;
    if !status.success() {
        bail!("taskset could not pin the harness to cpu {cpu}");
    }
    Ok(())
}

/// A started child; killed (SIGKILL) and reaped on drop unless already stopped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        let child = command.spawn().with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Drop kills it.
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whose CPU time to count: a child process, or this process (in-process runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuOf {
    Pid(u32),
    ThisProcess,
}

/// Seconds of CPU (user + system, all threads) the process has used so far,
/// from `/proc/<pid>/stat` (fields 14 and 15, in USER_HZ = 100 ticks per second).
pub fn cpu_secs(of: CpuOf) -> anyhow::Result<f64> {
    let path = match of {
        CpuOf::Pid(pid) => format!("/proc/{pid}/stat"),
        CpuOf::ThisProcess => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu(&stat).with_context(|| format!("cannot parse {path}"))
}

/// USER_HZ: fixed at 100 in the /proc ABI on Linux.
const TICKS_PER_SEC: f64 = 100.0;

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// Jiffies a CPU (or all CPUs, for `None`) has spent busy and in total, from
/// `/proc/stat`. Busy is user + nice + system + irq + softirq; idle, iowait and
/// steal (time the hypervisor gave to other guests) are not.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

impl CpuTicks {
    pub fn read(cpu: Option<usize>) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let name = cpu.map_or_else(|| "cpu".to_owned(), |c| format!("cpu{c}"));
        parse_cpu_line(&stat, &name).with_context(|| format!("no {name} line in /proc/stat"))
    }

    /// Busy share of the time since `earlier`, in percent.
    pub fn busy_pct_since(&self, earlier: &CpuTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        self.busy.saturating_sub(earlier.busy) as f64 * 100.0 / total
    }
}

fn parse_cpu_line(stat: &str, name: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(CpuTicks { busy: at(0) + at(1) + at(2) + at(5) + at(6), total: (0..8).map(at).sum() })
}

/// A loopback port nobody listens on right now (the OS's pick).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_even_with_spaces_in_it() {
        let stat = "42 (tokio worker) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn busy_ticks_leave_out_idle_iowait_and_steal() {
        let stat = "cpu  9 9 9 9 9 9 9 9 0 0\ncpu1 10 1 5 80 2 1 1 3 0 0\n";
        let ticks = parse_cpu_line(stat, "cpu1").unwrap();
        assert_eq!((ticks.busy, ticks.total), (18, 103));
        assert!(parse_cpu_line(stat, "cpu7").is_none());
    }

    #[test]
    fn this_process_has_a_readable_cpu_time() {
        assert!(cpu_secs(CpuOf::ThisProcess).unwrap() >= 0.0);
    }
}
