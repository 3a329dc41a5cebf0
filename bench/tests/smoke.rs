//! Smoke run of the harness, so it never rots: a few hundred jobs through every
//! workload of ours — 50 jobs end to end and 20 fan-out subscribers for the
//! WebSocket ones — with an in-process api and worker, its own redis-server, no
//! pinning and no peers (those need Node and Python and run only in the full
//! benchmark).

use std::path::PathBuf;

use bench::measure::Workload;
use bench::ours::Launch;
use bench::peers::PeerEnv;
use bench::procs::Pinning;
use bench::redis_server::Persistence;
use bench::report::Results;
use bench::run::{E2ePlan, FanoutPlan, LatencyPlan, OursLaunch, Plan};
use bench::workloads::Params;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_of_every_workload_processes_all_jobs_and_writes_its_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan {
        params: Params {
            jobs: 300,
            chunk: 100,
            inflight: 2,
            concurrency: 50,
            claim_batch: None,
            poll_ms: 10,
            timeout_secs: 30,
            tenants: 2,
        },
        pairs: 1,
        peers: Vec::new(),
        library: true,
        latency: Some(LatencyPlan { rates: vec![200], secs: 1.0, warmup_secs: 0.2, rounds: 1 }),
        // 50 jobs at 200/s, each followed to its `succeeded` event.
        e2e: Some(E2ePlan { rates: vec![200], secs: 0.25, warmup_secs: 0.0, rounds: 1, timeout_secs: 10.0 }),
        // 20 subscribers, 10 jobs (20 jobs/s for 0.5 s: 3 events × 20 subscribers × 20 jobs/s = 1,200/s).
        fanout: Some(FanoutPlan {
            subscribers: vec![20],
            offered: vec![1_200.0],
            secs: 0.5,
            rounds: 1,
            connect_rate: 1_000,
            source_ips: 2,
            timeout_secs: 10.0,
        }),
        persistence: Persistence::Off,
        replicas: 0,
        pinning: Pinning::NONE,
        ours: OursLaunch { launch: Launch::InProcess, api_env: Vec::new() },
        peer_env: PeerEnv { dir: PathBuf::from("peers"), venv: dir.path().join("venv") },
        results_dir: dir.path().to_path_buf(),
    };

    let results = bench::run::execute(&plan).await.expect("the smoke run succeeds");
    results.write(dir.path()).expect("results are written");

    for workload in [Workload::EnqueueHttp, Workload::EnqueueLibrary, Workload::Process] {
        let runs = results.of("ours", workload);
        assert_eq!(runs.len(), 1, "{workload:?}");
        let m = runs[0];
        assert_eq!(m.jobs, 300);
        assert!(m.jobs_per_sec > 0.0, "{m:?}");
        assert!(m.redis_cmds_per_job > 0.0, "{m:?}");
        assert!(m.redis_scripts_per_job > 0.0, "{m:?}");
        assert!(m.redis_cpu_us_per_job >= 0.0, "{m:?}");
    }
    let latency = &results.latency;
    assert_eq!(latency.len(), 1);
    assert_eq!(latency[0].requests, 200, "{:?}", latency[0]);
    assert_eq!(latency[0].errors, 0, "{:?}", latency[0]);
    assert!(latency[0].p50_ms > 0.0 && latency[0].p50_ms <= latency[0].p99_ms);

    let e2e = &results.e2e;
    assert_eq!(e2e.len(), 1);
    assert_eq!((e2e[0].jobs, e2e[0].post_errors, e2e[0].lost), (50, 0, 0), "{:?}", e2e[0]);
    assert_eq!(e2e[0].subscriber_closed, None, "{:?}", e2e[0]);
    assert!(e2e[0].p50_ms > 0.0 && e2e[0].p50_ms <= e2e[0].p99_ms, "{:?}", e2e[0]);

    let fanout = &results.fanout;
    assert_eq!(fanout.len(), 1);
    let f = &fanout[0];
    assert_eq!((f.subscribers, f.connected, f.jobs, f.events_per_subscriber), (20, 20, 10, 30), "{f:?}");
    assert_eq!((f.delivered, f.lost, f.closed_slow, f.closed_other), (600, 0, 0, 0), "{f:?}");
    assert!(f.delivered_per_sec > 0.0 && f.p50_ms <= f.p99_ms, "{f:?}");

    let written: Results =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).expect("results.json")).expect("parses");
    assert_eq!(written.measurements.len(), 3);
    let markdown = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert!(markdown.contains("| processing | ours |"), "{markdown}");
    assert!(markdown.contains("## End to end"), "{markdown}");
    assert!(markdown.contains("## Fan-out"), "{markdown}");
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
}
