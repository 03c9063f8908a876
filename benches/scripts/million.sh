#!/usr/bin/env bash
# Does the cost grow with the store? 10 KB creates, listing and search on PostgreSQL, first with
# about a thousand checkpoints stored, then again after seeding 1,000,000 more
# (seed-million.sql). Needs release builds (cargo build --release -p ckpt-server -p ckpt-bench).
#
#   benches/scripts/million.sh
#
# Environment: DATABASE_URL (admin URL; default the local cluster on 5432), DURATION (8s).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=target/release
DURATION=${DURATION:-8s}
PG_ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL="${PG_ADMIN%/*}/ckpt_million"
PORT=${PORT:-7796}
SERVER="http://127.0.0.1:$PORT"

psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ckpt_million" -c "CREATE DATABASE ckpt_million"
data=$(mktemp -d)
"$BIN/checkpointd" --listen "127.0.0.1:$PORT" --data-dir "$data" --database "$PG_URL" --log warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    "$BIN/ckpt-bench" run --server "$SERVER" --call get -n 1 >/dev/null 2>&1 && break
    sleep 0.1
done

measure() {
    local label=$1
    shift
    "$BIN/ckpt-bench" run --server "$SERVER" -z "$DURATION" --warmup 1s --format json "$@" |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
rps, p50, p99 = r["rps"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]
print(f"{sys.argv[1]:<52} {rps:>8,.0f} /s   p50 {p50:>6.2f} ms   p99 {p99:>6.2f} ms")
' "$label"
}

stored() {
    psql -qtA "$PG_URL" -c "SELECT count(*) FROM checkpoints"
}

# A thousand checkpoints in 10 sessions (a full page of 100 each), then the same calls on the
# seeded store.
"$BIN/ckpt-bench" run --server "$SERVER" --call create --size 10KB -c 10 --sessions 10 -n 1000 \
    >/dev/null 2>&1
session=$(psql -qtA "$PG_URL" -c "SELECT name FROM sessions ORDER BY id LIMIT 1")
for round in small million; do
    if [[ $round == million ]]; then
        echo "seeding 1,000,000 checkpoints…" >&2
        psql -q "$PG_URL" -f benches/scripts/seed-million.sql
        session=big-25
    fi
    echo "== $(stored) checkpoints stored"
    measure "create 10 KB, c=16" --call create --size 10KB -c 16
    measure "list by session (page of 100), c=1" --call list --target-session "$session" -c 1
    measure "list by session (page of 100), c=16" --call list --target-session "$session" -c 16
    if [[ $round == million ]]; then
        measure "search, all sessions, rare word, c=1" --call search --query tokenizer -c 1
    fi
done
