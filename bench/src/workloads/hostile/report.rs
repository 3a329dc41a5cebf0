//! hostile.json and hostile.md: one row per attack, without / with the attacker.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::{CONCURRENCY, HostileResults, VICTIM_RATE, VictimFigures};

/// Above this much CPU (% of one core) used by processes not ours during a
/// phase, its row is flagged: the machine was shared, latencies are suspect.
const NOISY_CPU_PCT: f64 = 25.0;

impl HostileResults {
    /// `hostile.json` and `hostile.md` in `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("hostile.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("hostile.md"), self.markdown())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let mut md = String::new();
        let _ = writeln!(md, "# Hostile tenants ({})\n", self.started_at);
        let _ = writeln!(
            md,
            "Machine: nproc {}, {} ({}), kernel {}; Redis {}. Each phase {} s on a fresh Redis, API and one \
             worker (concurrency {CONCURRENCY}), default limits; the victim submits `noop` jobs at {VICTIM_RATE}/s. \
             Figures: without the attacker / with it.\n",
            self.nproc,
            self.machine.cpu_model,
            self.machine.os,
            self.machine.kernel,
            self.versions.get("redis").map_or("unknown", String::as_str),
            self.secs,
        );
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        let _ = writeln!(
            md,
            "| attack | victim enqueue p99, ms | victim start p99, ms | victim jobs not started | Redis CPU % | \
             Redis used_memory peak, MiB | attacker outcomes |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for a in &self.attacks {
            let (b, x) = (&a.baseline, &a.attacked);
            let refused = |v: &VictimFigures| {
                if v.refused.0.is_empty() { String::new() } else { format!(" (refused: {})", v.refused.render()) }
            };
            let other = b.other_cpu_pct.max(x.other_cpu_pct);
            let noisy =
                if other > NOISY_CPU_PCT { format!(" ⚠ other processes: {other:.0} % CPU") } else { String::new() };
            let _ = writeln!(
                md,
                "| {}{} | {:.1} / {:.1}{} | {:.1} / {:.1} | {} / {} of {} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
                a.attack.name(),
                noisy,
                b.victim.enqueue_p99_ms,
                x.victim.enqueue_p99_ms,
                refused(&x.victim),
                b.victim.start_p99_ms,
                x.victim.start_p99_ms,
                b.victim.not_started,
                x.victim.not_started,
                x.victim.accepted,
                b.redis_cpu_pct,
                x.redis_cpu_pct,
                mib(b.redis_used_memory_peak),
                mib(x.redis_used_memory_peak),
                x.attacker.render(),
            );
        }
        let _ = writeln!(md, "\nAttacker's use at the end of each attacked phase, and what it queued beforehand:\n");
        for a in &self.attacks {
            let usage: Vec<String> = a.attacked.attacker_usage.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                md,
                "- {}: {}; prepared: {}; API peak RSS {:.0} / {:.0} MiB; victim enqueue p50 {:.1} / {:.1} ms, \
                 start p50 {:.1} / {:.1} ms; other processes' CPU {:.0} / {:.0} %; Redis time under attack: {}.",
                a.attack.name(),
                usage.join(", "),
                a.attacked.attacker_prepare.render(),
                mib(a.baseline.api_rss_peak),
                mib(a.attacked.api_rss_peak),
                a.baseline.victim.enqueue_p50_ms,
                a.attacked.victim.enqueue_p50_ms,
                a.baseline.victim.start_p50_ms,
                a.attacked.victim.start_p50_ms,
                a.baseline.other_cpu_pct,
                a.attacked.other_cpu_pct,
                busiest(&a.attacked.redis_busiest),
            );
        }
        md
    }
}

/// The first three of (command, calls, µs), as `evalsha 1.20 s (7866 calls)`.
fn busiest(commands: &[(String, u64, u64)]) -> String {
    let parts: Vec<String> = commands
        .iter()
        .take(3)
        .map(|(name, calls, usec)| format!("{name} {:.2} s ({calls} calls)", *usec as f64 / 1e6))
        .collect();
    if parts.is_empty() { "—".into() } else { parts.join(", ") }
}
