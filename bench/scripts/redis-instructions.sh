#!/usr/bin/env bash
# Redis's instructions per job, counted by callgrind (within 1% from run to
# run of the same build, whatever else the machine does): 20,000 `noop` jobs
# enqueued through `POST /v1/jobs/batch` (20 × 1,000), then drained by one
# worker at concurrency 50. Prints the instructions of each phase; divide by
# 20,000. Needs valgrind, redis-server, curl and python3, and a release build.
#
#   cargo build --release -p api -p worker
#   bench/scripts/redis-instructions.sh [checkout-dir] [port]
set -euo pipefail
dir=$(cd "${1:-.}" && pwd); port=${2:-7101}; out=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
  redis-server --port "$port" --save "" --appendonly no --daemonize no >"$out/redis.log" 2>&1 &
redis=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
export JWT_SECRET="a secret for counting instructions, long enough"
export REDIS_URL="redis://127.0.0.1:$port" REDIS_PREFIX=cg RUST_LOG=warn RATE_LIMIT_PER_SEC=0
api_port=$((port + 1))
BIND_ADDR="127.0.0.1:$api_port" "$dir/target/release/api" >"$out/api.log" 2>&1 &
api=$!
token=$("$dir/target/release/api" token --tenant cg --scope "jobs:write jobs:read" --ttl 1h)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.2; done
body=$(python3 -c 'import json; print(json.dumps({"jobs": [{"type": "noop"}] * 1000}))')
callgrind_control -z "$redis" >/dev/null
for _ in $(seq 20); do
  curl -sf -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$body" \
    "http://127.0.0.1:$api_port/v1/jobs/batch" >/dev/null
done
callgrind_control -d enqueue "$redis" >/dev/null
CONCURRENCY=50 LEASE_SECS=30 "$dir/target/release/worker" >"$out/worker.log" 2>&1 &
worker=$!
for _ in $(seq 600); do
  ready=$(redis-cli -p "$port" llen '{cg}:q:default:ready'); running=$(redis-cli -p "$port" hlen '{cg}:q:default:running')
  [ "$ready" = "0" ] && [ "$running" -le 1 ] && break
  sleep 0.5
done
kill -TERM "$worker"; wait "$worker" || true
callgrind_control -d process "$redis" >/dev/null
kill "$api"; wait "$api" 2>/dev/null || true
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "$redis" 2>/dev/null || true
echo "enqueue: $(grep -m1 '^summary:' "$out/cg.out.1" | cut -d' ' -f2) instructions"
echo "process: $(grep -m1 '^summary:' "$out/cg.out.2" | cut -d' ' -f2) instructions"
rm -rf "$out"
