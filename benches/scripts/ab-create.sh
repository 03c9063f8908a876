#!/usr/bin/env bash
# A/B of 10 KB creates on PostgreSQL between two builds, alternating runs so both see the same
# machine: each run recreates the `ckpt_bench` database, starts one build's server, and runs
# ckpt-bench at concurrency 1 and 16 for 6 s after a 1 s warm-up.
#
#   benches/scripts/ab-create.sh DIR_A DIR_B [ROUNDS]   # each DIR holds checkpointd and ckpt-bench
#
# Build the other side with its own checkout and target directory, e.g.
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release -p ckpt-server -p ckpt-bench)
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
dirs=("$1" "$2")
rounds=${3:-2}
PG_ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL="${PG_ADMIN%/*}/ckpt_bench"
PORT=${PORT:-7799}

one_run() {
    local bin=$1 data pid
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ckpt_bench" -c "CREATE DATABASE ckpt_bench"
    data=$(mktemp -d)
    "$bin/checkpointd" --listen "127.0.0.1:$PORT" --data-dir "$data" --database "$PG_URL" \
        --log warn 2>/dev/null &
    pid=$!
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' RETURN
    sleep 2
    for c in 1 16; do
        local report="$data/c$c.json"
        "$bin/ckpt-bench" run --server "http://127.0.0.1:$PORT" --call create --size 10KB -c "$c" \
            -z 6s --warmup 1s --cleanup --format json --output "$report" >/dev/null 2>&1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["latency_ms"]
print("%-32s c=%-3s %7.0f req/s  p50 %5.2f ms  p99 %5.2f ms" % (sys.argv[2], sys.argv[3], r["rps"], l["p50"], l["p99"]))' \
            "$report" "$bin" "$c"
    done
}

for _ in $(seq "$rounds"); do
    for dir in "${dirs[@]}"; do
        one_run "$dir"
    done
done
