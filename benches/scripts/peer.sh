#!/usr/bin/env bash
# checkpointd beside LangGraph's Postgres checkpointer, in the same PostgreSQL, one after the
# other: creates against puts and loads against gets, for 10 KB states of 10 values, 1 MB states
# of 1,000 values and 1 MB states of one value, at concurrency 1 and 16. Prints both rates and
# their ratio. Needs release builds (cargo build --release -p ckpt-server -p ckpt-bench) and
# python3 (the peer's virtualenv is made under target/ on first use).
#
#   benches/scripts/peer.sh
#
# Environment: DATABASE_URL (an admin URL of the PostgreSQL to use; default the local cluster
# on 5432), DURATION (seconds per line, default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=target/release
DURATION=${DURATION:-5}
PG_ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_ADMIN%/*}
PORT=${PORT:-7797}
OUT=${OUT:-$(mktemp -d)}

psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ckpt_peer" -c "CREATE DATABASE ckpt_peer"
data=$(mktemp -d)
"$BIN/checkpointd" --listen "127.0.0.1:$PORT" --data-dir "$data" --database "$PG_BASE/ckpt_peer" \
    --log warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    "$BIN/ckpt-bench" run --server "http://127.0.0.1:$PORT" --call get -n 1 >/dev/null 2>&1 && break
    sleep 0.1
done

# The same lines for both: state size, values per state, concurrency.
lines=("10000 10 1" "10000 10 16" "1000000 1000 1" "1000000 1000 16" "1000000 1 1" "1000000 1 16")

for line in "${lines[@]}"; do
    read -r size keys c <<<"$line"
    for call in create load; do
        "$BIN/ckpt-bench" run --server "http://127.0.0.1:$PORT" --call "$call" --size "${size}B" \
            --keys "$keys" -c "$c" -z "${DURATION}s" --warmup 1s --cleanup --format json \
            --output "$OUT/ours-$call-$size-$keys-$c.json" >/dev/null
    done
done
kill $pid; wait $pid 2>/dev/null || true

# The peer, one saver per task at concurrency 16 (a shared saver serializes its calls).
DSN="${PG_BASE/postgres:/postgresql:}/langgraph_bench"
benches/peer/langgraph/run.sh --setup
for line in "${lines[@]}"; do
    read -r size keys c <<<"$line"
    for op in put get; do
        target/peer-venv/bin/python benches/peer/langgraph/bench.py --dsn "$DSN" --op "$op" \
            --size "$size" --channels "$keys" --concurrency "$c" --savers per-task \
            --duration "$DURATION" --warmup 1 >"$OUT/peer-$op-$size-$keys-$c.json"
    done
done

python3 - "$OUT" "${lines[@]}" <<'EOF'
import json, sys

out, lines = sys.argv[1], sys.argv[2:]
print(f"{'call':<14} {'state':>10} {'values':>6} {'c':>3} {'checkpointd /s':>15} {'LangGraph /s':>13} {'ratio':>7}")
for line in lines:
    size, keys, c = line.split()
    for ours, theirs in (("create", "put"), ("load", "get")):
        o = json.load(open(f"{out}/ours-{ours}-{size}-{keys}-{c}.json"))
        t = json.load(open(f"{out}/peer-{theirs}-{size}-{keys}-{c}.json"))
        name = f"{ours}/{theirs}"
        print(f"{name:<14} {int(size):>10,} {keys:>6} {c:>3} {o['rps']:>15,.0f} {t['rate']:>13,.0f} {o['rps'] / t['rate']:>6.1f}x")
print(f"JSON reports in {out}")
EOF
