//! Results: what ran where (`Setup`), every measurement, and their summary as
//! `results.json`, a Markdown table (`results.md`) and a plot (`bench.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::measure::{E2eRun, FanoutRun, LatencyRun, Measurement, Workload};
use crate::procs::Pinning;
use crate::redis_server::{BenchRedis, Persistence};
use crate::run::{E2ePlan, FanoutPlan, LatencyPlan, Plan};
use crate::workloads::Params;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub started_at: String,
    pub machine: Machine,
    /// system → version and runtime.
    pub versions: BTreeMap<String, String>,
    pub params: Params,
    pub pairs: usize,
    pub persistence: Persistence,
    pub pinning: Pinning,
    /// `binaries` or `in-process`.
    pub launch: String,
    pub latency: Option<LatencyPlan>,
    #[serde(default)]
    pub e2e: Option<E2ePlan>,
    #[serde(default)]
    pub fanout: Option<FanoutPlan>,
}

impl Setup {
    pub fn describe(plan: &Plan) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
            .unwrap_or_default();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
            .unwrap_or_default();
        let mut versions = BTreeMap::new();
        versions.insert("redis".to_owned(), BenchRedis::version());
        versions.insert("ours".to_owned(), format!("bench {} (this workspace)", env!("CARGO_PKG_VERSION")));
        Self {
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: Machine {
                cpu_model,
                // Not `available_parallelism`: the harness has pinned itself to one CPU.
                cpus: read("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count(),
                kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
                os,
            },
            versions,
            params: plan.params.clone(),
            pairs: plan.pairs,
            persistence: plan.persistence,
            pinning: plan.pinning,
            launch: match plan.ours.launch {
                crate::ours::Launch::Binaries(_) => "binaries".into(),
                crate::ours::Launch::InProcess => "in-process".into(),
            },
            latency: plan.latency.clone(),
            e2e: plan.e2e.clone(),
            fanout: plan.fanout.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub setup: Setup,
    pub measurements: Vec<Measurement>,
    pub latency: Vec<LatencyRun>,
    /// Workload 4 (absent from results written before it existed).
    #[serde(default)]
    pub e2e: Vec<E2eRun>,
    /// Workload 6.
    #[serde(default)]
    pub fanout: Vec<FanoutRun>,
}

/// Median with the range it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        Some(Self { median, min: values[0], max: values[n - 1] })
    }
}

/// The comparisons the ratio table makes: (label, our workload, the peer's workload).
pub const COMPARISONS: [(&str, Workload, Workload); 3] = [
    ("processing", Workload::Process, Workload::Process),
    ("bulk enqueue: our HTTP batch vs their library", Workload::EnqueueHttp, Workload::EnqueueLibrary),
    ("bulk enqueue: library vs library", Workload::EnqueueLibrary, Workload::EnqueueLibrary),
];

impl Results {
    pub fn new(setup: Setup) -> Self {
        Self { setup, measurements: Vec::new(), latency: Vec::new(), e2e: Vec::new(), fanout: Vec::new() }
    }

    /// Systems in order of appearance (ours first).
    pub fn systems(&self) -> Vec<String> {
        let mut systems: Vec<String> = Vec::new();
        for m in &self.measurements {
            if !systems.contains(&m.system) {
                systems.push(m.system.clone());
            }
        }
        systems
    }

    pub fn of(&self, system: &str, workload: Workload) -> Vec<&Measurement> {
        self.measurements.iter().filter(|m| m.system == system && m.workload == workload).collect()
    }

    pub fn stat(&self, system: &str, workload: Workload, field: impl Fn(&Measurement) -> f64) -> Option<Stat> {
        Stat::of(self.of(system, workload).into_iter().map(field).collect())
    }

    /// ours ÷ peer of `field`, one ratio per round that has both.
    pub fn ratio(
        &self,
        peer: &str,
        ours: Workload,
        theirs: Workload,
        field: impl Fn(&Measurement) -> f64,
    ) -> Option<Stat> {
        let ratios = self
            .of("ours", ours)
            .into_iter()
            .filter_map(|a| {
                let b = self.of(peer, theirs).into_iter().find(|b| b.pair == a.pair)?;
                Some(field(a) / field(b))
            })
            .collect();
        Stat::of(ratios)
    }

    /// Latency runs at `rate`, summarised over rounds.
    pub fn latency_stat(&self, rate: u32, field: impl Fn(&LatencyRun) -> f64) -> Option<Stat> {
        Stat::of(self.latency.iter().filter(|r| r.rate == rate).map(field).collect())
    }

    pub fn rates(&self) -> Vec<u32> {
        let mut rates: Vec<u32> = self.latency.iter().map(|r| r.rate).collect();
        rates.sort_unstable();
        rates.dedup();
        rates
    }

    /// End-to-end runs at `rate`, summarised over rounds.
    pub fn e2e_stat(&self, rate: u32, field: impl Fn(&E2eRun) -> f64) -> Option<Stat> {
        Stat::of(self.e2e.iter().filter(|r| r.rate == rate).map(field).collect())
    }

    pub fn e2e_rates(&self) -> Vec<u32> {
        let mut rates: Vec<u32> = self.e2e.iter().map(|r| r.rate).collect();
        rates.sort_unstable();
        rates.dedup();
        rates
    }

    /// Fan-out runs with `subscribers` at `offered` deliveries/s, summarised over rounds.
    pub fn fanout_stat(&self, subscribers: u64, offered: f64, field: impl Fn(&FanoutRun) -> f64) -> Option<Stat> {
        Stat::of(
            self.fanout
                .iter()
                .filter(|r| r.subscribers == subscribers && r.offered_per_sec == offered)
                .map(field)
                .collect(),
        )
    }

    /// The (subscribers, offered deliveries/s) pairs measured, in order.
    pub fn fanout_cases(&self) -> Vec<(u64, f64)> {
        let mut cases: Vec<(u64, f64)> = self.fanout.iter().map(|r| (r.subscribers, r.offered_per_sec)).collect();
        cases.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        cases.dedup();
        cases
    }

    /// Writes results.json, results.md and bench.svg into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("results.md"), crate::markdown::render(self))?;
        crate::plot::render(self, &dir.join("bench.svg"))?;
        Ok(())
    }
}

/// `12,345` style.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// `median (min–max)` with `decimals`.
pub fn stat_text(stat: Option<Stat>, decimals: usize, thousands_sep: bool) -> String {
    let Some(s) = stat else { return "–".into() };
    let f = |v: f64| if thousands_sep { thousands(v) } else { format!("{v:.decimals$}") };
    let mut text = f(s.median);
    if (s.max - s.min).abs() > f64::EPSILON {
        let _ = write!(text, " ({}–{})", f(s.min), f(s.max));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(Stat::of(vec![3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Stat::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stat::of(vec![]).is_none());
    }

    #[test]
    fn big_numbers_get_thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
