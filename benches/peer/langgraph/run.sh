#!/usr/bin/env bash
# Runs the LangGraph peer over the benchmark matrix and prints a table.
#
#   benches/peer/langgraph/run.sh [OUT.jsonl]     (default target/peer-langgraph.jsonl)
#   benches/peer/langgraph/run.sh --setup         (only make the virtualenv)
#
# Environment: DSN (default postgresql://postgres@127.0.0.1:5432/langgraph_bench), DURATION and
# WARMUP in seconds (default 4 and 1: the 18 runs take about 2 minutes on 2 cores).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv=$root/target/peer-venv
out=${1:-$root/target/peer-langgraph.jsonl}
dsn=${DSN:-postgresql://postgres@127.0.0.1:5432/langgraph_bench}
duration=${DURATION:-4}
warmup=${WARMUP:-1}

# The venv is rebuilt only when missing, and reinstalled only when requirements.txt changed.
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$venv/requirements.installed"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.installed"
fi

if [[ ${1:-} == --setup ]]; then
    exit 0
fi

mkdir -p "$(dirname "$out")"
: >"$out"
status=0
for op in put get; do
    # 10 KB as 10 x 1,000 B; 1 MB as 1,000 x 1,000 B and as one value of 1 MB.
    for state in "10000 10" "1000000 1000" "1000000 1"; do
        read -r size channels <<<"$state"
        # Concurrency 1; 16 over one saver (as an app uses it); 16 with a saver per task.
        for load in "1 shared" "16 shared" "16 per-task"; do
            read -r concurrency savers <<<"$load"
            "$venv/bin/python" "$here/bench.py" --dsn "$dsn" --op "$op" --size "$size" \
                --channels "$channels" --concurrency "$concurrency" --savers "$savers" \
                --duration "$duration" --warmup "$warmup" >>"$out" || status=1
        done
    done
done

"$venv/bin/python" - "$out" <<'EOF'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
head = ("op", "size", "channels", "c", "savers", "calls/s", "MB/s", "p50 ms", "p90 ms", "p99 ms",
        "max ms", "errors")
print(("{:<4} {:>8} {:>8} {:>3} {:<9}" + " {:>8}" * 7).format(*head))
for r in rows:
    # A run too short for any measured call to finish has no percentiles: print a dash.
    cells = [r[k] for k in ("rate", "mb_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors")]
    print(("{:<4} {:>8} {:>8} {:>3} {:<9}" + " {:>8}" * 7).format(
        r["op"], r["size"], r["channels"], r["concurrency"], r["savers"],
        *("-" if c is None else c for c in cells)))
print(f"versions: {rows[0]['versions']}; JSON lines in {sys.argv[1]}")
EOF
exit "$status"
