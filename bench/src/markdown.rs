//! `results.md`: the tables BENCHMARKS.md quotes.

use std::fmt::Write as _;

use crate::measure::{Measurement, Workload};
use crate::report::{COMPARISONS, Results, stat_text};

pub fn render(r: &Results) -> String {
    let mut md = String::new();
    let s = &r.setup;
    let _ = writeln!(md, "# Benchmark results ({})\n", s.started_at);
    let _ = writeln!(
        md,
        "Machine: {} CPUs, {} ({}), kernel {}. Redis persistence: {:?}. Pinning: Redis on cpu {}, \
         everything else on cpu {}. Our processes: {}.\n",
        s.machine.cpus,
        s.machine.cpu_model,
        s.machine.os,
        s.machine.kernel,
        s.persistence,
        cpu(s.pinning.redis_cpu),
        cpu(s.pinning.sut_cpu),
        s.launch
    );
    for (system, version) in &s.versions {
        let _ = writeln!(md, "- {system}: {version}");
    }
    let p = &s.params;
    let _ = writeln!(
        md,
        "\n{} jobs per run, {} per enqueue call, {} calls in flight; worker concurrency {}; {} rounds, \
         systems interleaved, Redis flushed before every run. Figures: median (min–max).\n",
        p.jobs, p.chunk, p.inflight, p.concurrency, s.pairs
    );

    if !r.measurements.is_empty() {
        throughput_table(&mut md, r);
        ratio_table(&mut md, r);
        commands_table(&mut md, r);
    }
    if !r.latency.is_empty() {
        latency_table(&mut md, r);
    }
    md
}

fn cpu(pin: Option<usize>) -> String {
    pin.map_or_else(|| "any".to_owned(), |c| c.to_string())
}

fn throughput_table(md: &mut String, r: &Results) {
    md.push_str("## Throughput and cost per job\n\n");
    md.push_str(
        "| workload | system | jobs/s | Redis CPU µs/job | Redis cmds/job | scripts/job | process CPU µs/job |\n",
    );
    md.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for workload in [Workload::EnqueueHttp, Workload::EnqueueLibrary, Workload::Process] {
        for system in r.systems() {
            if r.of(&system, workload).is_empty() {
                continue;
            }
            let stat = |f: fn(&Measurement) -> f64| r.stat(&system, workload, f);
            let _ = writeln!(
                md,
                "| {} | {system} | {} | {} | {} | {} | {} |",
                workload.title(),
                stat_text(stat(|m| m.jobs_per_sec), 0, true),
                stat_text(stat(|m| m.redis_cpu_us_per_job), 1, false),
                stat_text(stat(|m| m.redis_cmds_per_job), 2, false),
                stat_text(stat(|m| m.redis_scripts_per_job), 3, false),
                stat_text(stat(|m| m.process_cpu_us_per_job), 1, false),
            );
        }
    }
    md.push('\n');
}

fn ratio_table(md: &mut String, r: &Results) {
    let peers: Vec<String> = r.systems().into_iter().filter(|s| s != "ours").collect();
    if peers.is_empty() {
        return;
    }
    md.push_str("## Ours ÷ peer, one ratio per round\n\n");
    md.push_str("Throughput: above 1 means we are faster. Redis CPU per job: below 1 means we use less.\n\n");
    let _ =
        writeln!(md, "| comparison | {} |", peers.iter().map(|p| format!("vs {p}")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(peers.len()));
    for (label, ours, theirs) in COMPARISONS {
        for (what, field) in [
            ("jobs/s", (|m: &Measurement| m.jobs_per_sec) as fn(&Measurement) -> f64),
            ("Redis CPU µs/job", |m: &Measurement| m.redis_cpu_us_per_job),
        ] {
            let cells: Vec<String> =
                peers.iter().map(|p| stat_text(r.ratio(p, ours, theirs, field), 2, false) + "×").collect();
            let _ = writeln!(md, "| {label}, {what} | {} |", cells.join(" | "));
        }
    }
    md.push('\n');
}

fn commands_table(md: &mut String, r: &Results) {
    md.push_str("## Redis commands per job, round 1 (commands inside scripts included)\n\n");
    md.push_str("| system | workload | commands per job |\n|---|---|---|\n");
    for m in r.measurements.iter().filter(|m| m.pair == 0) {
        let top: Vec<String> =
            m.top_commands.iter().filter(|(_, n)| *n >= 0.001).map(|(c, n)| format!("{c} {n:.3}")).collect();
        let _ = writeln!(md, "| {} | {} | {} |", m.system, m.workload.title(), top.join(", "));
    }
    md.push('\n');
}

fn latency_table(md: &mut String, r: &Results) {
    let rounds = r.latency.iter().map(|l| l.round).max().map_or(0, |m| m + 1);
    let _ = writeln!(md, "## HTTP single-job enqueue latency (ours), open loop, median of {rounds} rounds (min–max)\n");
    md.push_str("| rate req/s | requests | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | generator send lag p99 ms | API CPU µs/req | Redis CPU µs/req | Redis cmds/req |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for rate in r.rates() {
        let s = |f: fn(&crate::measure::LatencyRun) -> f64, d| stat_text(r.latency_stat(rate, f), d, false);
        let _ = writeln!(
            md,
            "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(|l| l.requests as f64, 0),
            s(|l| l.errors as f64, 0),
            s(|l| l.p50_ms, 3),
            s(|l| l.p90_ms, 3),
            s(|l| l.p99_ms, 3),
            s(|l| l.p999_ms, 3),
            s(|l| l.max_ms, 2),
            s(|l| l.send_lag_p99_ms, 3),
            s(|l| l.api_cpu_us_per_req, 1),
            s(|l| l.redis_cpu_us_per_req, 1),
            s(|l| l.redis_cmds_per_req, 2),
        );
    }
    md.push('\n');
}
