"""Celery peer of the benchmark harness (`cargo run --release -p bench`).

Run as a script, it does workload 1 (bulk enqueue of no-op tasks, published in
batches of BENCH_CHUNK through kombu's producer batch, which pipelines the
LPUSHes) and then workload 2 (one `celery worker` process, threads pool at
BENCH_CONCURRENCY, processes them), against the Redis at REDIS_URL, which the
harness has just flushed. Around each phase it reads `INFO cpu commandstats`
and the CPU time of the process doing the work, and prints one JSON object on
stdout; the harness computes every figure from those raw values.

Imported by the worker (`celery -A bench_celery worker`), it is the task module.
Settings are the fastest sensible ones for no-op tasks: no result backend,
ignore_result, early acks, prefetch 128, no gossip/mingle/heartbeat. There is no result backend, so
completion is seen from outside Celery: each task appends one byte to a file.
"""

import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import celery
from celery import Celery, signals

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
JOBS = int(os.environ.get("BENCH_JOBS", "50000"))
CHUNK = int(os.environ.get("BENCH_CHUNK", "1000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "50"))
PREFETCH = int(os.environ.get("BENCH_PREFETCH", "128"))
TIMEOUT_S = float(os.environ.get("BENCH_TIMEOUT_MS", "300000")) / 1000

app = Celery("bench_celery", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=False,
    worker_prefetch_multiplier=PREFETCH,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_DONE_FD = None
if os.environ.get("BENCH_DONE_FILE"):
    _DONE_FD = os.open(os.environ["BENCH_DONE_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


@app.task(name="noop")
def noop():
    os.write(_DONE_FD, b"x")


@signals.worker_ready.connect
def _ready(**_kwargs):
    with open(os.environ["BENCH_READY_FILE"], "w", encoding="ascii") as out:
        out.write(repr(time.monotonic()))


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid):
    """utime + stime of a process, from /proc (fields 14 and 15), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def enqueue(info):
    before = {"info": info(), "cpu": own_cpu()}
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        batching = hasattr(producer, "batch")
        for start in range(0, JOBS, CHUNK):
            size = min(CHUNK, JOBS - start)
            with producer.batch(size) if batching else contextlib.nullcontext():
                for _ in range(size):
                    noop.apply_async(producer=producer)
    secs = time.perf_counter() - started
    return {
        "jobs": JOBS,
        "secs": secs,
        "cpu_secs": own_cpu() - before["cpu"],
        "info_before": before["info"],
        "info_after": info(),
        "batched_publish": batching,
    }


def process(info, workdir):
    done_file = os.path.join(workdir, "done")
    ready_file = os.path.join(workdir, "ready")
    env = dict(os.environ, BENCH_DONE_FILE=done_file, BENCH_READY_FILE=ready_file)
    info_before = info()
    argv = [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "-P", "threads",
            "-c", str(CONCURRENCY), "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "warning"]
    worker = subprocess.Popen(argv, cwd=os.path.dirname(os.path.abspath(__file__)), env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(ready_file) or os.path.getsize(ready_file) == 0:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("celery worker did not become ready")
            time.sleep(0.005)
        with open(ready_file, encoding="ascii") as f:
            ready_at = float(f.read())
        cpu_ready = proc_cpu(worker.pid)
        while not os.path.exists(done_file) or os.path.getsize(done_file) < JOBS:
            if time.monotonic() > deadline or worker.poll() is not None:
                done = os.path.getsize(done_file) if os.path.exists(done_file) else 0
                raise RuntimeError(f"only {done} of {JOBS} tasks ran")
            time.sleep(0.02)
        finished_at = time.monotonic()
        cpu = proc_cpu(worker.pid) - cpu_ready
        info_after = info()
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return {
        "jobs": JOBS,
        "secs": finished_at - ready_at,
        "cpu_secs": cpu,
        "info_before": info_before,
        "info_after": info_after,
    }


def main():
    import redis
    import tempfile

    admin = redis.Redis.from_url(REDIS_URL)
    admin.set_response_callback("INFO", lambda reply, **_: reply.decode())

    def info():
        return admin.execute_command("INFO", "cpu", "commandstats")

    with tempfile.TemporaryDirectory(prefix="bench-celery-") as workdir:
        result = {
            "system": "celery",
            "version": celery.__version__,
            "runtime": f"python {sys.version.split()[0]}, pool threads c{CONCURRENCY}, prefetch {PREFETCH}",
            "enqueue": enqueue(info),
            "process": process(info, workdir),
        }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
