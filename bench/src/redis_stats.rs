//! Redis's own accounting, read from `INFO cpu commandstats` before and after a
//! phase: CPU seconds (`used_cpu_sys + used_cpu_user`) and calls per command,
//! where commands run inside Lua scripts are counted under their own names as
//! well as the EVALSHA that ran them. These figures barely move with the noise
//! of a shared machine, unlike throughput.
//!
//! The same parser reads the raw INFO text the peer scripts report, so every
//! system is measured by the same code.

use std::collections::BTreeMap;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;

/// Commands the harness itself sends around a phase; never charged to a system.
const HARNESS_COMMANDS: [&str; 1] = ["info"];
/// Commands that run a script (their inner commands are counted separately).
const SCRIPT_COMMANDS: [&str; 4] = ["evalsha", "eval", "fcall", "evalsha_ro"];

/// One reading of `INFO cpu commandstats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisSample {
    pub cpu_secs: f64,
    /// command → (calls, usec)
    pub commands: BTreeMap<String, (u64, u64)>,
}

impl RedisSample {
    pub async fn read(conn: &mut MultiplexedConnection) -> anyhow::Result<Self> {
        let text: String = redis::cmd("INFO").arg("cpu").arg("commandstats").query_async(conn).await?;
        Self::parse(&text)
    }

    /// Parses the text of `INFO cpu commandstats` (or a whole `INFO`).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut sample = Self::default();
        let mut cpu_fields = 0;
        for line in text.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("used_cpu_sys:").or_else(|| line.strip_prefix("used_cpu_user:")) {
                sample.cpu_secs += value.parse::<f64>().with_context(|| format!("bad INFO line {line}"))?;
                cpu_fields += 1;
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, stats)) = rest.split_once(':') else { continue };
                let field = |key: &str| {
                    stats.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok())
                };
                sample
                    .commands
                    .insert(name.to_ascii_lowercase(), (field("calls").unwrap_or(0), field("usec").unwrap_or(0)));
            }
        }
        anyhow::ensure!(cpu_fields == 2, "INFO reply lacks used_cpu_sys/used_cpu_user");
        Ok(sample)
    }

    /// What happened between `self` (before) and `after`.
    pub fn delta(&self, after: &RedisSample) -> RedisDelta {
        let mut commands = BTreeMap::new();
        for (name, &(calls, usec)) in &after.commands {
            if HARNESS_COMMANDS.contains(&name.as_str()) {
                continue;
            }
            let (calls0, usec0) = self.commands.get(name).copied().unwrap_or_default();
            let calls = calls.saturating_sub(calls0);
            if calls > 0 {
                commands.insert(name.clone(), (calls, usec.saturating_sub(usec0)));
            }
        }
        RedisDelta { cpu_secs: (after.cpu_secs - self.cpu_secs).max(0.0), commands }
    }
}

/// Redis work done during a phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisDelta {
    pub cpu_secs: f64,
    /// command → (calls, usec), harness commands left out.
    pub commands: BTreeMap<String, (u64, u64)>,
}

impl RedisDelta {
    /// Removes calls the harness made during the phase (e.g. its progress polls).
    pub fn discount(&mut self, command: &str, calls: u64) {
        if let Some(entry) = self.commands.get_mut(command) {
            entry.0 = entry.0.saturating_sub(calls);
        }
    }

    /// Every command executed, those inside scripts included.
    pub fn total_calls(&self) -> u64 {
        self.commands.values().map(|(calls, _)| calls).sum()
    }

    /// Script invocations (EVALSHA and friends): round trips that ran Lua.
    pub fn script_calls(&self) -> u64 {
        SCRIPT_COMMANDS.iter().filter_map(|name| self.commands.get(*name)).map(|(calls, _)| calls).sum()
    }

    /// The `n` most frequent commands, as (name, calls per job).
    pub fn top_per_job(&self, jobs: u64, n: usize) -> Vec<(String, f64)> {
        let mut top: Vec<(String, f64)> =
            self.commands.iter().map(|(name, (calls, _))| (name.clone(), *calls as f64 / jobs as f64)).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(n);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.0\r\nused_cpu_sys_children:0.0\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# CPU\r\nused_cpu_sys:2.0\r\nused_cpu_user:3.0\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=15,usec=800,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hset:calls=20,usec=40,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=9,usec=270,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn a_delta_counts_new_calls_and_cpu_but_not_the_harness_info_calls() {
        let delta = RedisSample::parse(BEFORE).unwrap().delta(&RedisSample::parse(AFTER).unwrap());
        assert!((delta.cpu_secs - 1.5).abs() < 1e-9);
        assert_eq!(delta.commands.get("evalsha"), Some(&(5, 300)));
        assert_eq!(delta.commands.get("hset"), Some(&(20, 40)));
        assert!(!delta.commands.contains_key("info"));
        assert_eq!(delta.total_calls(), 25);
        assert_eq!(delta.script_calls(), 5);
    }

    #[test]
    fn info_without_cpu_fields_is_refused() {
        assert!(RedisSample::parse("cmdstat_get:calls=1,usec=1").is_err());
    }
}
