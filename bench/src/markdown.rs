//! `results.md`: the tables BENCHMARKS.md quotes.

use std::fmt::Write as _;

use crate::measure::{E2eRun, FanoutRun, Measurement, Workload};
use crate::report::{COMPARISONS, Results, stat_text};

pub fn render(r: &Results) -> String {
    let mut md = String::new();
    let s = &r.setup;
    let _ = writeln!(md, "# Benchmark results ({})\n", s.started_at);
    let _ = writeln!(
        md,
        "Machine: {} CPUs, {} ({}), kernel {}. Redis persistence: {:?}. Pinning: Redis on cpu {}, \
         everything else on cpu {}{}. Our processes: {}.\n",
        s.machine.cpus,
        s.machine.cpu_model,
        s.machine.os,
        s.machine.kernel,
        s.persistence,
        cpu(s.pinning.redis_cpu),
        cpu(s.pinning.sut_cpu),
        match s.pinning.harness_cpu {
            Some(h) if s.pinning.sut_cpu.is_some_and(|c| c != h) => format!(" except the harness, on cpu {h}"),
            _ => String::new(),
        },
        s.launch
    );
    for (system, version) in &s.versions {
        let _ = writeln!(md, "- {system}: {version}");
    }
    let p = &s.params;
    if r.measurements.is_empty() {
        let _ = writeln!(md, "\nWorker concurrency {}. Figures: median (min–max).\n", p.concurrency);
    } else {
        let _ = writeln!(
            md,
            "\n{} jobs per run, {} per enqueue call, {} calls in flight; worker concurrency {}; {} rounds, \
             systems interleaved, Redis flushed before every run. Figures: median (min–max).\n",
            p.jobs, p.chunk, p.inflight, p.concurrency, s.pairs
        );
    }

    if !r.measurements.is_empty() {
        throughput_table(&mut md, r);
        ratio_table(&mut md, r);
        commands_table(&mut md, r);
    }
    if !r.latency.is_empty() {
        latency_table(&mut md, r);
    }
    if !r.e2e.is_empty() {
        e2e_table(&mut md, r);
    }
    if !r.fanout.is_empty() {
        fanout_table(&mut md, r);
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

/// The end-to-end target: p99 under this at [`E2E_TARGET_RATE`].
pub const E2E_TARGET_P99_MS: f64 = 20.0;
pub const E2E_TARGET_RATE: u32 = 5_000;

fn e2e_table(md: &mut String, r: &Results) {
    let rounds = r.e2e.iter().map(|l| l.round).max().map_or(0, |m| m + 1);
    let _ = writeln!(
        md,
        "## End to end: `POST /v1/jobs` → `succeeded` event on a WebSocket (ours), open loop, median of {rounds} rounds (min–max)\n"
    );
    md.push_str(
        "One worker (the concurrency above), one API, one subscriber following all of the tenant's jobs. Latency runs \
         from each job's scheduled send time to its `succeeded` event arriving at the subscriber; `lost` = no such \
         event within the timeout. CPU per job counts the warm-up jobs too. `SUT CPU busy %` is how busy the \
         CPU shared by the api, worker and harness was (from /proc/stat: any process on it counts, steal does not).\n\n",
    );
    md.push_str("| rate jobs/s | jobs | POST errors | lost | subscriber closed | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | POST p99 ms | send lag p99 ms | API CPU µs/job | worker CPU µs/job | harness CPU µs/job | SUT CPU busy % | Redis CPU µs/job | Redis cmds/job |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for rate in r.e2e_rates() {
        let s = |f: fn(&E2eRun) -> f64, d| stat_text(r.e2e_stat(rate, f), d, false);
        let closed: Vec<String> = r
            .e2e
            .iter()
            .filter(|e| e.rate == rate)
            .filter_map(|e| e.subscriber_closed.map(|c| c.to_string()))
            .collect();
        let _ = writeln!(
            md,
            "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(|l| l.jobs as f64, 0),
            s(|l| l.post_errors as f64, 0),
            s(|l| l.lost as f64, 0),
            if closed.is_empty() { "–".to_owned() } else { closed.join(", ") },
            s(|l| l.p50_ms, 3),
            s(|l| l.p90_ms, 3),
            s(|l| l.p99_ms, 3),
            s(|l| l.p999_ms, 3),
            s(|l| l.max_ms, 2),
            s(|l| l.post_p99_ms, 3),
            s(|l| l.send_lag_p99_ms, 3),
            s(|l| l.api_cpu_us_per_job, 1),
            s(|l| l.worker_cpu_us_per_job, 1),
            s(|l| l.harness_cpu_us_per_job, 1),
            s(|l| l.sut_cpu_busy_pct, 0),
            s(|l| l.redis_cpu_us_per_job, 1),
            s(|l| l.redis_cmds_per_job, 2),
        );
    }
    md.push('\n');
    let at_target: Vec<&E2eRun> = r.e2e.iter().filter(|e| e.rate == E2E_TARGET_RATE).collect();
    if let Some(p99) = r.e2e_stat(E2E_TARGET_RATE, |e| e.p99_ms) {
        let met = at_target.iter().filter(|e| e.p99_ms < E2E_TARGET_P99_MS && e.lost == 0).count();
        let _ = writeln!(
            md,
            "Target p99 < {E2E_TARGET_P99_MS} ms at {E2E_TARGET_RATE} jobs/s: **{}** (median p99 {:.1} ms; met in {met} of {} rounds, \
             a round counting only with nothing lost).\n",
            if p99.median < E2E_TARGET_P99_MS && met * 2 > at_target.len() { "met" } else { "not met" },
            p99.median,
            at_target.len()
        );
    }
}

fn fanout_table(md: &mut String, r: &Results) {
    let rounds = r.fanout.iter().map(|l| l.round).max().map_or(0, |m| m + 1);
    let _ = writeln!(
        md,
        "## Fan-out: one tenant, every subscriber follows all its jobs (ours), median of {rounds} rounds (min–max)\n"
    );
    md.push_str(
        "Each subscriber opens its own socket and authenticates. Jobs go in open loop (single `POST /v1/jobs`) and one \
         worker runs them; each job makes 3 events, and each event goes to every subscriber. Delivery latency is the \
         arrival at the subscriber minus the event's `at` stamp (Redis time, whole ms, so up to 1 ms high). \
         `lost` = deliveries owed to open subscribers that had not arrived by the timeout; `closed 1013` = subscribers \
         the API closed for falling `WS_BUFFER` messages behind. The subscribers run in the harness, on the same CPU \
         as the API and worker (`SUT CPU busy %`: how busy that CPU was while the jobs went through).\n\n",
    );
    md.push_str("| subscribers | offered deliveries/s | connected | connect s | jobs/s | events per subscriber | delivered/s | p50 ms | p90 ms | p99 ms | max ms | lost | closed 1013 | closed other | API CPU µs/delivery | harness CPU µs/delivery | SUT CPU busy % |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (subscribers, offered) in r.fanout_cases() {
        let s = |f: fn(&FanoutRun) -> f64, d| stat_text(r.fanout_stat(subscribers, offered, f), d, false);
        let t = |f: fn(&FanoutRun) -> f64| stat_text(r.fanout_stat(subscribers, offered, f), 0, true);
        let _ = writeln!(
            md,
            "| {subscribers} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            crate::report::thousands(offered),
            s(|f| f.connected as f64, 0),
            s(|f| f.connect_secs, 1),
            s(|f| f.job_rate, 1),
            s(|f| f.events_per_subscriber as f64, 0),
            t(|f| f.delivered_per_sec),
            s(|f| f.p50_ms, 2),
            s(|f| f.p90_ms, 2),
            s(|f| f.p99_ms, 2),
            s(|f| f.max_ms, 1),
            t(|f| f.lost as f64),
            s(|f| f.closed_slow as f64, 0),
            s(|f| f.closed_other as f64, 0),
            s(|f| f.api_cpu_us_per_delivery, 2),
            s(|f| f.harness_cpu_us_per_delivery, 2),
            s(|f| f.sut_cpu_busy_pct, 0),
        );
    }
    md.push('\n');
}
