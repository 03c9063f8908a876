#!/usr/bin/env bash
# Flamegraphs of checkpointd under one ckpt-bench load: the server alone (DWARF call graphs)
# and the whole machine (client, server and PostgreSQL, frame-pointer call graphs, grouped by
# process name). Needs perf (linux-perf) and inferno (`cargo install inferno`), and release
# builds with line tables (the workspace's release profile has them).
#
#   benches/scripts/profile.sh NAME [ckpt-bench run options…]
#   benches/scripts/profile.sh create-10k-c16 --call create --size 10KB -c 16
#
# Writes docs/profiles/NAME-server.svg and docs/profiles/NAME-machine.svg. Environment:
# BACKEND (postgres, default, or sqlite), DATABASE_URL (admin URL), PROFILE_SECONDS (4).
set -euo pipefail
cd "$(dirname "$0")/../.."

name=$1
shift
BIN=target/release
SECONDS_RECORDED=${PROFILE_SECONDS:-4}
PG_ADMIN=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${PORT:-7795}
out=docs/profiles
mkdir -p "$out"
work=$(mktemp -d)

args=(--listen "127.0.0.1:$PORT" --data-dir "$work/data" --log warn)
if [[ ${BACKEND:-postgres} == postgres ]]; then
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS ckpt_profile" -c "CREATE DATABASE ckpt_profile"
    args+=(--database "${PG_ADMIN%/*}/ckpt_profile")
fi
"$BIN/checkpointd" "${args[@]}" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    "$BIN/ckpt-bench" run --server "http://127.0.0.1:$PORT" --call get -n 1 >/dev/null 2>&1 && break
    sleep 0.1
done

# Setup and warm-up first, then two recordings while the load runs.
total=$((2 * SECONDS_RECORDED + 4))
"$BIN/ckpt-bench" run --server "http://127.0.0.1:$PORT" -z "${total}s" --warmup 1s "$@" \
    >"$work/bench.txt" 2>&1 &
bench=$!
while ! grep -q "^running" "$work/bench.txt" 2>/dev/null; do sleep 0.2; done
sleep 2
perf record -q -F 499 -g --call-graph dwarf,32768 -p "$pid" -o "$work/server.data" \
    -- sleep "$SECONDS_RECORDED" 2>/dev/null
perf record -q -F 499 -a -g -o "$work/machine.data" -- sleep "$SECONDS_RECORDED" 2>/dev/null
wait "$bench"
grep -E "Requests/sec|Throughput|50 %|99 %" "$work/bench.txt" || true

perf script -i "$work/server.data" 2>/dev/null | inferno-collapse-perf >"$work/server.folded"
inferno-flamegraph --title "checkpointd: $name" <"$work/server.folded" >"$out/$name-server.svg"
perf script -i "$work/machine.data" 2>/dev/null | inferno-collapse-perf --pid >"$work/machine.folded"
# Group by process name, not by pid: one tower per program.
sed -E 's/^([^;]*)-[0-9]+(\/[0-9]+)?;/\1;/' "$work/machine.folded" |
    inferno-flamegraph --title "whole machine: $name" >"$out/$name-machine.svg"
# In text too: each program's share of the machine's samples, and the server's hottest leaves.
echo "share of machine samples by program:"
awk '{c = $NF; split($0, f, ";"); p = f[1]; sub(/-[0-9?]+(\/[0-9]+)?$/, "", p); n[p] += c; t += c}
     END {for (p in n) printf "  %5.1f %%  %s\n", 100 * n[p] / t, p}' "$work/machine.folded" |
    sort -rn | head -8
echo "server's hottest functions (self samples):"
awk '{c = $NF; sub(/ [0-9]+$/, ""); k = split($0, f, ";"); n[f[k]] += c; t += c}
     END {for (x in n) printf "  %5.1f %%  %s\n", 100 * n[x] / t, substr(x, 1, 110)}' \
    "$work/server.folded" | sort -rn | head -25
echo "wrote $out/$name-server.svg and $out/$name-machine.svg"
