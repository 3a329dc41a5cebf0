//! Schema migrations against a real `redis-server`: concurrent starts apply each
//! migration once, a second run is a no-op, and a schema that is newer than the
//! binary or a migration edited after it was applied stops every process.

use std::collections::HashMap;
use std::sync::Arc;
mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use shared::error::{StoreError, StoreResult};
use shared::keys::Keys;
use shared::migrate::{self, MIGRATIONS};
use shared::testkit::RedisServer;
use tokio::sync::Barrier;

const PREFIX: &str = "migrations-test";

async fn connect(redis: &RedisServer) -> ConnectionManager {
    shared::store::connect(&redis.url(), Some(Duration::from_secs(5))).await.expect("redis connects")
}

/// `{prefix}:migrations`: migration name → recorded checksum.
async fn recorded(conn: &mut ConnectionManager, keys: &Keys) -> HashMap<String, String> {
    conn.hgetall(keys.migrations()).await.expect("hgetall")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_runs_apply_each_migration_exactly_once() {
    let redis = RedisServer::start();
    let keys = Keys::new(PREFIX);
    // One connection per "process", all connected before any starts, so the
    // eight runs race for the lock rather than queue behind each other's connect.
    let start = Arc::new(Barrier::new(8));
    let mut runs = Vec::new();
    for _ in 0..8 {
        let (mut conn, keys, start) = (connect(&redis).await, keys.clone(), start.clone());
        runs.push(tokio::spawn(async move {
            start.wait().await;
            migrate::run(&mut conn, &keys).await
        }));
    }
    let mut applied: Vec<&str> = Vec::new();
    for run in runs {
        applied.extend(run.await.expect("run task").expect("run succeeds"));
    }
    applied.sort_unstable();
    let all: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(applied, all, "each migration reported applied by exactly one run");

    let mut conn = connect(&redis).await;
    assert_eq!(migrate::current(&mut conn, &keys).await.expect("current"), migrate::latest());
    let recorded = recorded(&mut conn, &keys).await;
    assert_eq!(recorded.len(), MIGRATIONS.len(), "{recorded:?}");
    for migration in MIGRATIONS {
        let sum =
            recorded.get(migration.name).unwrap_or_else(|| panic!("{} not recorded: {recorded:?}", migration.name));
        assert!(sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()), "{}: {sum}", migration.name);
    }
    migrate::check(&mut conn, &keys).await.expect("schema is at the latest version");
    // 0001_init's own write happened, not just its record.
    let default_queue: bool = conn.sismember(keys.queues(), "default").await.expect("sismember");
    assert!(default_queue);
    let lock: Option<String> = conn.get(keys.migrations_lock()).await.expect("get lock");
    assert_eq!(lock, None, "the lock is released");
}

#[tokio::test]
async fn running_migrations_again_applies_nothing_and_changes_nothing() {
    let redis = RedisServer::start();
    let keys = Keys::new(PREFIX);
    let mut conn = connect(&redis).await;
    assert_eq!(migrate::run(&mut conn, &keys).await.expect("first run").len(), MIGRATIONS.len());
    let before = recorded(&mut conn, &keys).await;

    let again = migrate::run(&mut conn, &keys).await.expect("second run");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(recorded(&mut conn, &keys).await, before);
    assert_eq!(migrate::current(&mut conn, &keys).await.expect("current"), migrate::latest());
}

/// Whether `result` is the refusal of a schema at version `found`.
fn too_new<T>(result: &StoreResult<T>, found: u32) -> bool {
    matches!(result, Err(StoreError::SchemaTooNew { found: f, known }) if *f == found && *known == migrate::latest())
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_stops_migrate_check_the_api_and_the_worker() {
    let redis = RedisServer::start();
    let keys = Keys::new(PREFIX);
    let mut conn = connect(&redis).await;
    let newer = migrate::latest() + 1;
    let _: () = conn.set(keys.schema_version(), newer).await.expect("set version");

    let run = migrate::run(&mut conn, &keys).await;
    assert!(too_new(&run, newer), "{run:?}");
    let check = migrate::check(&mut conn, &keys).await;
    assert!(too_new(&check, newer), "{check:?}");
    assert_eq!(migrate::current(&mut conn, &keys).await.expect("current"), newer, "the newer schema is left alone");
    assert!(recorded(&mut conn, &keys).await.is_empty(), "no migration ran");

    let api_config = support::api_config(&redis.url(), PREFIX);
    let err = api::build(&api_config).await.expect_err("the api refuses to build");
    assert!(format!("{err:#}").contains("newer"), "{err:#}");

    let mut worker_config = worker::config::WorkerConfig::defaults();
    worker_config.redis.redis_url = redis.url();
    worker_config.redis.redis_prefix = PREFIX.into();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker::run(worker_config, std::future::pending()))
        .await
        .expect("the worker returns instead of starting");
    let err = outcome.expect_err("the worker refuses to start");
    assert!(format!("{err:#}").contains("newer"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused() {
    let redis = RedisServer::start();
    let keys = Keys::new(PREFIX);
    let mut conn = connect(&redis).await;
    migrate::run(&mut conn, &keys).await.expect("first run");
    let _: () = conn.hset(keys.migrations(), "0001_init", "0".repeat(64)).await.expect("hset");

    let run = migrate::run(&mut conn, &keys).await;
    assert!(matches!(&run, Err(StoreError::MigrationEdited { name }) if name == "0001_init"), "{run:?}");
}

#[tokio::test]
async fn the_migrate_subcommand_applies_the_schema_and_exits_0() {
    let redis = RedisServer::start();
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("migrate")
        .env("REDIS_URL", redis.url())
        .env("REDIS_PREFIX", "cli")
        .env("RUST_LOG", "warn")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut conn = connect(&redis).await;
    assert_eq!(migrate::current(&mut conn, &Keys::new("cli")).await.unwrap(), migrate::latest());
}

#[tokio::test]
async fn start_up_warns_about_redis_settings_that_would_lose_jobs() {
    let redis = RedisServer::start();
    let mut conn = connect(&redis).await;
    assert!(shared::store::durability_warnings(&mut conn).await.is_empty(), "AOF on and noeviction are fine");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("no").query_async(&mut conn).await.unwrap();
    let warnings = shared::store::durability_warnings(&mut conn).await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("noeviction"));
    assert!(warnings[1].contains("appendonly"));
}

/// 0002 builds the per-tenant counts from the records already stored, as a
/// deployment upgraded from schema 1 has them: the same counts the scripts keep.
#[tokio::test]
async fn the_tenant_counts_migration_rebuilds_the_counts_from_the_records() {
    let system = support::System::start().await;
    let worker = system.spawn_worker_with(|c| c.queues = vec!["default".into()]);
    let done = system.submit(serde_json::json!({"type": "noop"})).await;
    let failed = system.submit(serde_json::json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    system.submit(serde_json::json!({"type": "noop", "queue": "parked"})).await;
    system.submit(serde_json::json!({"type": "noop", "delay_ms": 3_600_000})).await;
    system.wait_for_status(&done, "succeeded", Duration::from_secs(15)).await;
    system.wait_for_status(&failed, "failed", Duration::from_secs(15)).await;
    worker.shutdown().await.unwrap();
    let (_, kept) = system.get("/v1/queues").await;

    // Back to schema 1: no counts, 0002 not applied.
    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    let counts = keys.tenant_counts(support::TENANT);
    let () = conn.del(&counts).await.unwrap();
    let () = conn.hdel(keys.migrations(), "0002_tenant_counts").await.unwrap();
    let () = conn.set(keys.schema_version(), 1).await.unwrap();
    let (_, emptied) = system.get("/v1/queues").await;
    assert_ne!(emptied, kept, "the counts are gone");

    assert_eq!(migrate::run(&mut conn, &keys).await.unwrap(), ["0002_tenant_counts"]);
    let (_, rebuilt) = system.get("/v1/queues").await;
    assert_eq!(rebuilt, kept);
    let parked = kept["queues"].as_array().unwrap().iter().find(|q| q["name"] == "parked").unwrap().clone();
    assert_eq!(parked["queued"], 1, "{kept}");
}

/// 0003 pins the leases hash of every queue a deployment of schema 2 has, so
/// its leases live in a hash table from the first claim on.
#[tokio::test]
async fn the_short_event_lines_migration_pins_every_leases_hash() {
    let system = support::System::start().await;
    for queue in ["default", "reports"] {
        system.submit(serde_json::json!({"type": "noop", "queue": queue})).await;
    }
    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    // Back to schema 2: no pins, 0003 not applied.
    for queue in ["default", "reports"] {
        let () = conn.del(keys.running(queue)).await.unwrap();
    }
    let () = conn.hdel(keys.migrations(), "0003_short_event_lines").await.unwrap();
    let () = conn.set(keys.schema_version(), 2).await.unwrap();

    assert_eq!(migrate::run(&mut conn, &keys).await.unwrap(), ["0003_short_event_lines"]);
    assert_eq!(migrate::current(&mut conn, &keys).await.unwrap(), 3);
    for queue in ["default", "reports"] {
        let pin: Option<String> = conn.hget(keys.running(queue), shared::keys::RUNNING_PIN).await.unwrap();
        assert_eq!(pin.as_deref().map(str::len), Some(80), "{queue}");
        let encoding: String =
            redis::cmd("OBJECT").arg("ENCODING").arg(keys.running(queue)).query_async(&mut conn).await.unwrap();
        assert_eq!(encoding, "hashtable", "{queue}");
    }
}

/// Rewrites the deployment as schema 3 stored it: state headers of five fields,
/// leases without their holder, one ready list and one failed set per queue,
/// none of the indexes of schema 5.
async fn back_to_schema_3(conn: &mut ConnectionManager, keys: &Keys, queues: &[&str]) {
    let states: HashMap<String, String> = conn.hgetall(keys.state()).await.unwrap();
    for (id, state) in states {
        let (header, history) = state.split_once('\n').unwrap_or((&state, ""));
        let old: Vec<&str> = header.split('\t').take(5).collect();
        let () = conn.hset(keys.state(), id, format!("{}\n{history}", old.join("\t"))).await.unwrap();
    }
    for queue in queues {
        let leases: HashMap<String, String> = conn.hgetall(keys.running(queue)).await.unwrap();
        for (id, lease) in leases.into_iter().filter(|(id, _)| id != shared::keys::RUNNING_PIN) {
            let expiry = lease.split('\t').next().unwrap().to_owned();
            let () = conn.hset(keys.running(queue), id, expiry).await.unwrap();
        }
        let (tenant, q) = (support::TENANT, format!("{}:q:{queue}", keys.tag()));
        let ready: Vec<String> = conn.lrange(keys.ready(queue, tenant), 0, -1).await.unwrap();
        if !ready.is_empty() {
            let () = conn.rpush(format!("{q}:ready"), ready).await.unwrap();
        }
        let failed: Vec<(String, f64)> = conn.zrange_withscores(keys.failed(queue, tenant), 0, -1).await.unwrap();
        for (id, at) in failed {
            let () = conn.zadd(format!("{q}:failed"), id, at).await.unwrap();
        }
        let () = conn.del(&[keys.ready(queue, tenant), keys.failed(queue, tenant), keys.ring(queue)]).await.unwrap();
    }
    let () =
        conn.del(&[keys.ready_queues(), keys.due(), keys.busy(), keys.tenant_queues(support::TENANT)]).await.unwrap();
    let () = conn.hdel(keys.migrations(), &["0004_fencing_tokens", "0005_fair_queues"]).await.unwrap();
    let () = conn.set(keys.schema_version(), 3).await.unwrap();
}

/// 0004 and 0005: a deployment of schema 3 with jobs in every state upgrades in
/// place. Its headers are read as they are, its leases are marked held, its ready
/// lists and failed sets move per tenant with their indexes, and every job goes
/// on to the end it would have had.
#[tokio::test]
async fn a_schema_3_deployment_with_jobs_in_every_state_upgrades_to_fencing_tokens() {
    let system = support::System::start().await;
    let post = |body: serde_json::Value| system.submit(body);
    let worker = system.spawn_worker_with(|c| c.queues = vec!["default".into()]);
    let succeeded = post(serde_json::json!({"type": "noop"})).await;
    let failed = post(serde_json::json!({"type": "fail", "payload": {"times": 1, "permanent": true}})).await;
    // Its retry is due within 10 s (full jitter): watched first, so it is seen retrying.
    let retrying = post(serde_json::json!({"type": "fail", "payload": {"times": 1}, "backoff_base_ms": 10_000})).await;
    for (id, status) in [(&retrying, "retrying"), (&succeeded, "succeeded"), (&failed, "failed")] {
        system.wait_for_status(id, status, Duration::from_secs(15)).await;
    }
    worker.shutdown().await.unwrap();
    let queued = post(serde_json::json!({"type": "noop", "queue": "parked"})).await;
    let cancelled = post(serde_json::json!({"type": "noop", "queue": "parked"})).await;
    let (status, _, _) = system.post(&format!("/v1/jobs/{cancelled}/cancel"), &serde_json::json!({}), &[]).await;
    assert!(status.is_success());
    let scheduled = post(serde_json::json!({"type": "noop", "delay_ms": 3000})).await;
    // A run whose worker died: its job stays `running` under a lease nobody renews.
    let mut doomed = system.spawn_worker_process(&[("QUEUES", "slow")]);
    let running = post(serde_json::json!({"type": "sleep", "payload": {"ms": 2000}, "queue": "slow"})).await;
    system.wait_for_status(&running, "running", Duration::from_secs(10)).await;
    doomed.kill();

    let keys = Keys::new(&system.prefix);
    let mut conn = system.redis_conn().await;
    back_to_schema_3(&mut conn, &keys, &["default", "parked", "slow"]).await;
    let () = conn.hset(keys.tenant_counts(support::TENANT), "default\trunning", 0).await.unwrap();
    // Schema 3 took a cancelled job off its list.
    let () = conn.lrem(format!("{}:q:parked:ready", keys.tag()), 1, &cancelled).await.unwrap();
    let before: Vec<serde_json::Value> = {
        let mut records = Vec::new();
        for id in [&succeeded, &failed, &retrying, &queued, &cancelled, &scheduled, &running] {
            records.push(system.job(id).await);
        }
        records
    };

    assert_eq!(migrate::run(&mut conn, &keys).await.unwrap(), ["0004_fencing_tokens", "0005_fair_queues"]);
    let lease: String = conn.hget(keys.running("slow"), &running).await.unwrap();
    assert!(lease.ends_with("\tschema-3"), "{lease}");
    // 0005 moved the queued job and the failed one, and built the indexes.
    let parked: Vec<String> = conn.lrange(keys.ready("parked", support::TENANT), 0, -1).await.unwrap();
    assert_eq!(parked, std::slice::from_ref(&queued));
    let failures: Vec<String> = conn.zrange(keys.failed("default", support::TENANT), 0, -1).await.unwrap();
    assert_eq!(failures, std::slice::from_ref(&failed));
    let ready: Vec<String> = conn.lrange(keys.ready_queues(), 0, -1).await.unwrap();
    assert_eq!(ready, ["parked"]);
    let busy: Vec<String> = conn.smembers(keys.busy()).await.unwrap();
    assert_eq!(busy, ["slow"]);
    let due: Vec<String> = conn.zrange(keys.due(), 0, -1).await.unwrap();
    assert_eq!(due.len(), 1, "the queue with the scheduled and retrying jobs: {due:?}");
    let mut queues: Vec<String> = conn.smembers(keys.tenant_queues(support::TENANT)).await.unwrap();
    queues.sort();
    assert_eq!(queues, ["default", "parked", "slow"]);

    for (id, old) in [&succeeded, &failed, &retrying, &queued, &cancelled, &scheduled, &running].iter().zip(&before) {
        assert_eq!(&system.job(id).await, old, "a schema-3 record reads the same");
        assert!(!system.history(id).await.is_empty());
    }

    // Every live job reaches its end; the dead worker's run is taken back and counted.
    let _worker = system.spawn_worker_process(&[]);
    for id in [&queued, &scheduled, &retrying] {
        system.wait_for_status(id, "succeeded", Duration::from_secs(20)).await;
    }
    let rerun = system.wait_for_status(&running, "succeeded", Duration::from_secs(20)).await;
    assert_eq!(rerun["attempts"], 2, "{rerun}");
    for id in [&failed, &cancelled] {
        let (status, body, _) = system.post(&format!("/v1/jobs/{id}/retry"), &serde_json::json!({}), &[]).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
    system.wait_for_status(&cancelled, "succeeded", Duration::from_secs(20)).await;
    system.wait_for_status(&failed, "failed", Duration::from_secs(20)).await;

    // The counts the scripts kept agree with a recount of the records.
    let states: HashMap<String, String> = conn.hgetall(keys.state()).await.unwrap();
    let specs: HashMap<String, String> = conn.hgetall(keys.spec()).await.unwrap();
    let mut recount: HashMap<String, i64> = HashMap::new();
    for (id, state) in &states {
        let spec = shared::model::Spec::parse(&specs[id]).unwrap();
        let status = shared::model::State::parse(state.lines().next().unwrap()).unwrap().status;
        *recount.entry(format!("{}\t{status}", spec.queue)).or_default() += 1;
    }
    let mut counts: HashMap<String, i64> = conn.hgetall(keys.tenant_counts(support::TENANT)).await.unwrap();
    counts.retain(|_, n| *n != 0);
    assert_eq!(counts, recount);
}
