#!/usr/bin/env bash
# The one test command: lints, the migration check, every test against a real PostgreSQL and a
# real S3-compatible server (moto), and the doc build.
#
#   ./scripts/test.sh                      # everything, as CI runs it
#   SKIP_LINT=1 ./scripts/test.sh          # skip fmt, clippy and doc
#   ./scripts/test.sh -p ckpt-server       # extra arguments go to `cargo test`
#
# PostgreSQL and moto are started privately and torn down on exit (see scripts/lib/services.sh);
# set DATABASE_URL and/or AWS_ENDPOINT to use servers of your own instead. Missing tools
# (postgresql, python3-venv, curl) are installed with apt-get when running as root.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

lint=1
[[ ${SKIP_LINT:-0} == 1 ]] && lint=0

ckpt_banner "toolchain"
cargo --version >&2
if [[ $lint == 1 ]] && command -v rustup >/dev/null; then
    # rust-toolchain.toml lists them too, but older rustup or offline machines may not have
    # fetched them yet; if this fails the fmt or clippy step below fails loudly.
    rustup component add rustfmt clippy >&2 || ckpt_note "rustup component add failed; continuing"
fi

ckpt_banner "test services"
ckpt_services_up
# The replay tests read recorded sessions kept outside the repository.
if [[ -z ${CKPT_SESSION_DATA:-} && ! -d ../shared/data/agent-sessions ]]; then
    ckpt_note "warning: ../shared/data/agent-sessions not found and CKPT_SESSION_DATA unset;"
    ckpt_note "the replay tests will fail"
fi

if [[ $lint == 1 ]]; then
    ckpt_banner "cargo fmt --check"
    ckpt_run cargo fmt --all -- --check

    ckpt_banner "cargo clippy"
    ckpt_run cargo clippy --workspace --all-targets --locked -- -D warnings
fi

ckpt_banner "migrations are append-only"
ckpt_run scripts/check-migrations.sh

ckpt_banner "deploy/ validates offline"
ckpt_run scripts/validate-deploy.sh

ckpt_banner "cargo test"
ckpt_run cargo test --workspace --locked "$@"

ckpt_banner "bench smoke (no speed asserted)"
bench_smoke() {
    local data port pid rc=0
    data=$(mktemp -d)
    port=$(ckpt_free_port 25480)
    cargo build -q --locked -p ckpt-server -p ckpt-bench
    target/debug/checkpointd --listen "127.0.0.1:$port" --data-dir "$data" --log warn &
    pid=$!
    for _ in $(seq 100); do
        target/debug/ckpt-bench run --server "http://127.0.0.1:$port" --call get -n 1 >/dev/null 2>&1 && break
        sleep 0.1
    done
    local call
    for call in create create-incremental load get list search diff merge branch; do
        target/debug/ckpt-bench run --server "http://127.0.0.1:$port" --call "$call" --keys 10 \
            --change-keys 6 -c 2 -n 10 --cleanup >/dev/null || rc=$?
    done
    target/debug/ckpt-bench scenarios --server "http://127.0.0.1:$port" --merge-runs 1 --runs 1 \
        --database "$data/catalog.db" || rc=$?
    target/debug/ckpt-bench limits --duration 200ms --database "$DATABASE_URL" || rc=$?
    # The LangGraph peer (installs its pinned packages into target/peer-venv once). No warm-up:
    # each task's first call then falls in the window, however slow a loaded machine makes it.
    DSN="${DATABASE_URL%/*}/langgraph_bench" DURATION=0.5 WARMUP=0 \
        benches/peer/langgraph/run.sh "$data/peer.jsonl" >/dev/null || rc=$?
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    return "$rc"
}
bench_smoke

ckpt_banner "python client and LangGraph conformance"
# The client's tests and langgraph-checkpoint-conformance, on SQLite, then on a database of
# DATABASE_URL's server. The binary bench_smoke built is passed in: a `cargo build` of the
# server alone could resolve other features and rebuild.
CHECKPOINTD_BIN="$PWD/target/debug/checkpointd" ckpt_run scripts/python-client.sh

if [[ $lint == 1 ]]; then
    ckpt_banner "cargo doc"
    RUSTDOCFLAGS="${RUSTDOCFLAGS:+$RUSTDOCFLAGS }-Dwarnings" ckpt_run cargo doc --workspace --no-deps --locked
fi

ckpt_banner "all checks passed"
