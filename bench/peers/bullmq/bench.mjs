// BullMQ peer of the benchmark harness (`cargo run --release -p bench`).
//
// Runs workload 1 (bulk enqueue: `addBulk` in chunks, BENCH_INFLIGHT chunks in flight)
// and then workload 2 (processing those jobs: one Worker, no-op processor, completed
// jobs removed), against the Redis at REDIS_URL, which the harness has just flushed.
// Around each phase it reads `INFO cpu commandstats` and its own CPU time, and prints
// one JSON object on stdout; the harness computes every figure from those raw values,
// exactly as it does for our system.
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { readFileSync } from 'node:fs';

const env = (name, fallback) => process.env[name] ?? fallback;
const redisUrl = env('REDIS_URL', 'redis://127.0.0.1:6379');
const jobs = Number(env('BENCH_JOBS', '50000'));
const chunk = Number(env('BENCH_CHUNK', '1000'));
const inflight = Number(env('BENCH_INFLIGHT', '1'));
const concurrency = Number(env('BENCH_CONCURRENCY', '50'));
// Processing must finish within this, or the run fails rather than hang.
const timeoutMs = Number(env('BENCH_TIMEOUT_MS', '300000'));

const connection = () => new IORedis(redisUrl, { maxRetriesPerRequest: null });
const admin = connection();
const info = () => admin.info('cpu', 'commandstats');
const cpuMicros = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

async function phase(run) {
  const before = { info: await info(), cpu: cpuMicros() };
  const started = process.hrtime.bigint();
  await run();
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const after = { info: await info(), cpu: cpuMicros() };
  return { jobs, secs, cpu_secs: (after.cpu - before.cpu) / 1e6, info_before: before.info, info_after: after.info };
}

const queue = new Queue('bench', { connection: connection() });
await queue.waitUntilReady();

const enqueue = await phase(async () => {
  let next = 0;
  const lane = async () => {
    while (next < jobs) {
      const size = Math.min(chunk, jobs - next);
      next += size;
      const batch = Array.from({ length: size }, () => ({
        name: 'noop',
        data: {},
        opts: { removeOnComplete: true },
      }));
      await queue.addBulk(batch);
    }
  };
  await Promise.all(Array.from({ length: inflight }, lane));
});

let worker;
const processing = await phase(async () => {
  let completed = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${completed} of ${jobs} jobs completed`)), timeoutMs);
    worker = new Worker('bench', async () => {}, { connection: connection(), concurrency, autorun: false });
    worker.on('completed', () => {
      completed += 1;
      if (completed === jobs) {
        clearTimeout(timer);
        resolve();
      }
    });
    worker.on('error', reject);
    worker.run().catch(reject);
  });
});
await worker.close();
await queue.close();
await admin.quit();

const version = JSON.parse(readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url))).version;
process.stdout.write(
  JSON.stringify({ system: 'bullmq', version, runtime: `node ${process.version}`, enqueue, process: processing }) + '\n',
);
process.exit(0);
