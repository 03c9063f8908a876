#!/usr/bin/env bash
# First figures: create and load of 10 KB and 1 MB states at concurrency 1 and 16, on the
# embedded default (SQLite + directory) and on PostgreSQL + directory, three runs each; prints
# the median of each. Needs release builds (cargo build --release -p ckpt-server -p ckpt-bench)
# and, for the Postgres half, DATABASE_URL (default: the local cluster on 5432).
#
#   benches/scripts/basic.sh [sqlite|postgres]...     # both when no argument
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=target/release
RUNS=${RUNS:-3}
DURATION=${DURATION:-6s}
# A database of its own, recreated per run, so figures never include leftovers.
PG_ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL="${PG_ADMIN%/*}/ckpt_bench"
PORT=${PORT:-7799}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
backends=("$@")
[[ ${#backends[@]} -gt 0 ]] || backends=(sqlite postgres)

run_backend() {
    local backend=$1 data
    data=$(mktemp -d)
    local args=(--listen "127.0.0.1:$PORT" --data-dir "$data" --log warn)
    if [[ $backend == postgres ]]; then
        psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ckpt_bench" -c "CREATE DATABASE ckpt_bench"
        args+=(--database "$PG_URL")
    fi
    "$BIN/checkpointd" "${args[@]}" &
    local pid=$!
    trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' RETURN
    for _ in $(seq 100); do
        "$BIN/ckpt" --server "http://127.0.0.1:$PORT" sessions >/dev/null 2>&1 && break
        sleep 0.1
    done
    for call in create load; do
        for size in 10KB 1MB; do
            for c in 1 16; do
                local results=()
                for run in $(seq "$RUNS"); do
                    local file="$OUT/$backend-$call-$size-c$c-$run.json"
                    "$BIN/ckpt-bench" run --server "http://127.0.0.1:$PORT" --call "$call" --size "$size" \
                        -c "$c" -z "$DURATION" --warmup 1s --cleanup --format json --output "$file" >/dev/null
                    results+=("$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rps"], r["mb_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"])' "$file")")
                done
                printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p" |
                    awk -v b="$backend" -v call="$call" -v s="$size" -v c="$c" \
                        '{printf "%-8s %-6s %-5s c=%-3s %9.0f req/s %8.1f MB/s  p50 %6.2f ms  p99 %7.2f ms\n", b, call, s, c, $1, $2, $3, $4}'
            done
        done
    done
}

for backend in "${backends[@]}"; do
    run_backend "$backend"
done
echo "JSON reports in $OUT" >&2
