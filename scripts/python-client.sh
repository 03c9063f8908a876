#!/usr/bin/env bash
# The Python client's tests and LangGraph's conformance suite, against a real checkpointd on its
# embedded SQLite default and, when DATABASE_URL names a PostgreSQL server, on PostgreSQL too.
#
#   scripts/python-client.sh                 # as scripts/test.sh runs it
#   CHECKPOINTD_BIN=path scripts/python-client.sh -k conformance   # extra arguments go to pytest
#   SKIP_LINT=1 scripts/python-client.sh                            # skip ruff
#
# Installs clients/python/requirements.txt (every package pinned) into target/py-venv, once and
# again whenever the file changes, then this checkout's clients/python, whose gRPC stubs are
# generated from proto/ as it is built. Each pytest run starts its own server on a free port and
# stops it when the run ends.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
package=$root/clients/python
venv=$root/target/py-venv
server=${CHECKPOINTD_BIN:-$root/target/debug/checkpointd}
# Each pytest run takes well under a minute; this only stops a hung one.
run_limit=${PYTHON_TEST_TIMEOUT:-600}

if [[ -z ${CHECKPOINTD_BIN:-} ]]; then
    (cd "$root" && cargo build -q --locked -p ckpt-server)
fi

if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$package/requirements.txt" "$venv/requirements.installed"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$package/requirements.txt"
    cp "$package/requirements.txt" "$venv/requirements.installed"
fi
# The build runs in place (pip >= 21.3), next to ../../proto; its leftovers are ignored by git.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
    --force-reinstall "$package"

if [[ ${SKIP_LINT:-0} != 1 ]]; then
    # The same settings (pyproject.toml) for the package, its tests and the LangGraph bench.
    lint_paths=(src tests examples setup.py ../../benches/langgraph)
    (cd "$package" && "$venv/bin/ruff" check --config pyproject.toml "${lint_paths[@]}" &&
        "$venv/bin/ruff" format --check --config pyproject.toml "${lint_paths[@]}")
fi

run_tests() {
    (cd "$package" && CHECKPOINTD_BIN=$server timeout "$run_limit" \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
}

echo "python client: checkpointd on SQLite" >&2
run_tests "$@"

if [[ -z ${DATABASE_URL:-} ]]; then
    echo "python client: DATABASE_URL unset, PostgreSQL run skipped" >&2
    exit 0
fi
database="${DATABASE_URL%/*}/ckpt_python"
"$venv/bin/python" - "$DATABASE_URL" <<'PY'
import sys

import psycopg

# A fresh database for this run, so that nothing earlier changes what the tests see.
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("DROP DATABASE IF EXISTS ckpt_python WITH (FORCE)")
    conn.execute("CREATE DATABASE ckpt_python")
PY
echo "python client: checkpointd on PostgreSQL" >&2
CHECKPOINTD_DATABASE=$database run_tests "$@"
