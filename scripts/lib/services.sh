#!/usr/bin/env bash
# Throwaway test services for checkpointd: a private PostgreSQL cluster and a moto S3 server.
#
# Sourced by scripts/test.sh. Run directly to get a shell command run with both services up
# and torn down afterwards, e.g.:
#   scripts/lib/services.sh cargo test -p ckpt-server
#   scripts/lib/services.sh            # prints the environment, then tears down
#
# Inputs (environment):
#   DATABASE_URL          use this database instead of starting a cluster
#   AWS_ENDPOINT          use this S3 endpoint instead of starting moto (bucket must exist)
#   CKPT_PG_PORT          first port to try for PostgreSQL (default 25432, below the ephemeral range)
#   CKPT_MOTO_PORT        first port to try for moto (default 25433, below the ephemeral range)
#   CKPT_FORCE_MOTO_VENV  1: ignore a moto_server on PATH and use the repo's .venv-moto
#   CKPT_MOTO_VERSION     moto release for the venv (default 5.2.5; any 5.x if it fails)
#   CKPT_TEST_S3_BUCKET   bucket to create (default ckpt-test)
# Outputs: exports DATABASE_URL, AWS_ENDPOINT, AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, CKPT_TEST_S3_BUCKET. `ckpt_services_down` undoes everything started.

# The moto release the S3 behaviour was checked against (conditional puts, CAS, multipart).
CKPT_MOTO_VERSION="${CKPT_MOTO_VERSION:-5.2.5}"

CKPT_REPO_ROOT="${CKPT_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
CKPT_SVC_TMP=""
CKPT_PG_BIN=""
CKPT_PG_DATA=""
CKPT_MOTO_PID=""
CKPT_CHILD_PID=""
CKPT_APT_UPDATED=0

ckpt_banner() {
    printf '\n\033[1m==> %s\033[0m\n' "$*" >&2
}

ckpt_note() {
    printf '    %s\n' "$*" >&2
}

ckpt_die() {
    printf '\033[31merror:\033[0m %s\n' "$*" >&2
    exit 1
}

# Installs Debian packages; only possible as root on an apt system.
ckpt_apt_install() {
    command -v apt-get >/dev/null || ckpt_die "missing $*, and no apt-get to install it"
    [[ $(id -u) -eq 0 ]] || ckpt_die "missing $*; install it, or run as root to let this script"
    if [[ $CKPT_APT_UPDATED -eq 0 ]]; then
        ckpt_note "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
        CKPT_APT_UPDATED=1
    fi
    ckpt_note "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# True if something accepts TCP connections on 127.0.0.1:$1.
ckpt_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the first port from $1 up that nothing listens on.
ckpt_free_port() {
    local port=$1
    while ckpt_port_in_use "$port"; do
        port=$((port + 1))
        [[ $port -lt $(($1 + 200)) ]] || ckpt_die "no free port in $1-$port"
    done
    echo "$port"
}

ckpt_tmp() {
    if [[ -z $CKPT_SVC_TMP ]]; then
        CKPT_SVC_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-services.XXXXXX")
        chmod 755 "$CKPT_SVC_TMP"
    fi
}

# Finds initdb/pg_ctl: pg_config's bindir, else Debian's versioned folder, else installs.
ckpt_find_pg_bin() {
    local dir
    if command -v pg_config >/dev/null; then
        dir=$(pg_config --bindir)
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return 0
        fi
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# Runs a PostgreSQL server binary; PostgreSQL refuses to run as root. From `/`, as the postgres
# user may not be allowed into the current directory (a clone under /root).
ckpt_as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ckpt_start_postgres() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        ckpt_note "postgres: using DATABASE_URL from the environment"
        return 0
    fi
    if ! CKPT_PG_BIN=$(ckpt_find_pg_bin); then
        ckpt_apt_install postgresql
        CKPT_PG_BIN=$(ckpt_find_pg_bin) || ckpt_die "postgresql installed but initdb not found"
    fi

    ckpt_tmp
    local port log
    port=$(ckpt_free_port "${CKPT_PG_PORT:-25432}")
    CKPT_PG_DATA="$CKPT_SVC_TMP/pg"
    log="$CKPT_PG_DATA/postgres.log"
    mkdir -p "$CKPT_PG_DATA"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres:postgres "$CKPT_PG_DATA"
    fi

    ckpt_as_pg "$CKPT_PG_BIN/initdb" -D "$CKPT_PG_DATA/data" -U postgres --auth=trust -E UTF8 \
        --no-sync >"$CKPT_SVC_TMP/initdb.log" 2>&1 ||
        { cat "$CKPT_SVC_TMP/initdb.log" >&2; ckpt_die "initdb failed"; }
    # fsync and friends are off: a test cluster never needs to survive a crash.
    local opts="-p $port -k $CKPT_PG_DATA -c listen_addresses=127.0.0.1 -c max_connections=300"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    ckpt_as_pg "$CKPT_PG_BIN/pg_ctl" -D "$CKPT_PG_DATA/data" -l "$log" -w -t 60 -o "$opts" \
        start >/dev/null ||
        { cat "$log" >&2; ckpt_die "postgres failed to start"; }

    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    ckpt_note "postgres: $("$CKPT_PG_BIN/postgres" --version) on port $port (data in $CKPT_PG_DATA)"
}

# Prints a runnable moto_server: on PATH, else the repo's venv (created on first use).
ckpt_moto_bin() {
    local venv="$CKPT_REPO_ROOT/.venv-moto"
    if [[ ${CKPT_FORCE_MOTO_VENV:-0} != 1 ]] && command -v moto_server >/dev/null &&
        moto_server --help >/dev/null 2>&1; then
        command -v moto_server
        return 0
    fi
    if [[ -x $venv/bin/moto_server ]] && "$venv/bin/moto_server" --help >/dev/null 2>&1; then
        echo "$venv/bin/moto_server"
        return 0
    fi

    command -v python3 >/dev/null || ckpt_apt_install python3 python3-venv
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        ckpt_apt_install python3-venv
    fi
    ckpt_note "moto: creating $venv and installing moto[server]==$CKPT_MOTO_VERSION"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || ckpt_die "python3 -m venv failed"
    local pip_log="$CKPT_SVC_TMP/pip.log"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$CKPT_MOTO_VERSION" \
        >"$pip_log" 2>&1 ||
        {
            ckpt_note "moto: pin $CKPT_MOTO_VERSION failed ($(tail -n 1 "$pip_log")), trying any 5.x"
            "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' >"$pip_log" 2>&1
        } || { cat "$pip_log" >&2; ckpt_die "pip install moto[server] failed"; }
    echo "$venv/bin/moto_server"
}

# Waits until moto answers at $1; fails when the process exits first.
ckpt_wait_moto() {
    local tries=0
    until curl -sf -o /dev/null "$1/"; do
        kill -0 "$CKPT_MOTO_PID" 2>/dev/null || return 1
        tries=$((tries + 1))
        [[ $tries -lt 300 ]] || ckpt_die "moto did not answer on $1 within 30 s"
        sleep 0.1
    done
}

ckpt_start_moto() {
    export CKPT_TEST_S3_BUCKET="${CKPT_TEST_S3_BUCKET:-ckpt-test}"
    export AWS_ALLOW_HTTP=true
    if [[ -n ${AWS_ENDPOINT:-} ]]; then
        export AWS_REGION="${AWS_REGION:-us-east-1}"
        export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
        export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
        ckpt_note "s3: using AWS_ENDPOINT from the environment ($AWS_ENDPOINT)"
        return 0
    fi
    # Fake keys for moto, even if real ones are set: they must never reach a real account.
    export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    unset AWS_SESSION_TOKEN AWS_PROFILE
    command -v curl >/dev/null || ckpt_apt_install curl ca-certificates

    ckpt_tmp
    local bin port url attempt
    bin=$(ckpt_moto_bin)
    port=${CKPT_MOTO_PORT:-25433}
    # A free-looking port can still be taken between the check and the bind (or held by a
    # socket in TIME_WAIT): on "address in use", move to the next port and try again.
    for attempt in 1 2 3 4 5; do
        port=$(ckpt_free_port "$port")
        url="http://127.0.0.1:$port"
        # Started as a plain command so that $! is the server itself, not a subshell.
        "$bin" -H 127.0.0.1 -p "$port" >"$CKPT_SVC_TMP/moto.log" 2>&1 &
        CKPT_MOTO_PID=$!
        if ckpt_wait_moto "$url"; then
            break
        fi
        if ! grep -qi "in use" "$CKPT_SVC_TMP/moto.log" || [[ $attempt -eq 5 ]]; then
            cat "$CKPT_SVC_TMP/moto.log" >&2
            ckpt_die "moto exited during start-up"
        fi
        port=$((port + 1))
    done
    # moto checks no signatures, so a bare PUT creates the bucket.
    curl -sf -o /dev/null -X PUT "$url/$CKPT_TEST_S3_BUCKET" || ckpt_die "could not create bucket"

    export AWS_ENDPOINT="$url"
    ckpt_note "s3: $bin (pid $CKPT_MOTO_PID) on $url, bucket $CKPT_TEST_S3_BUCKET"
}

# Runs a command in its own process group and waits for it. Unlike a foreground command, the
# wait returns as soon as this shell is signalled, and the trap can then stop the whole tree
# (cargo and the test binaries it started) before the services go away.
ckpt_run() {
    setsid "$@" &
    CKPT_CHILD_PID=$!
    local rc=0
    wait "$CKPT_CHILD_PID" || rc=$?
    CKPT_CHILD_PID=""
    return "$rc"
}

# Stops whatever ckpt_services_up and ckpt_run started; safe to call twice and from a trap.
ckpt_services_down() {
    if [[ -n $CKPT_CHILD_PID ]]; then
        kill -TERM -- "-$CKPT_CHILD_PID" 2>/dev/null || kill -TERM "$CKPT_CHILD_PID" 2>/dev/null || true
        wait "$CKPT_CHILD_PID" 2>/dev/null || true
        CKPT_CHILD_PID=""
    fi
    if [[ -n $CKPT_MOTO_PID ]]; then
        kill "$CKPT_MOTO_PID" 2>/dev/null || true
        local _
        for _ in $(seq 50); do
            kill -0 "$CKPT_MOTO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$CKPT_MOTO_PID" 2>/dev/null || true
        wait "$CKPT_MOTO_PID" 2>/dev/null || true
        CKPT_MOTO_PID=""
    fi
    if [[ -n $CKPT_PG_DATA && -f $CKPT_PG_DATA/data/postmaster.pid ]]; then
        ckpt_as_pg "$CKPT_PG_BIN/pg_ctl" -D "$CKPT_PG_DATA/data" -m fast -w stop \
            >/dev/null 2>&1 || true
    fi
    CKPT_PG_DATA=""
    if [[ -n $CKPT_SVC_TMP ]]; then
        rm -rf "$CKPT_SVC_TMP"
        CKPT_SVC_TMP=""
    fi
}

# Starts both services (or adopts the ones named by the environment) and arranges teardown.
ckpt_services_up() {
    trap ckpt_services_down EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ckpt_start_postgres
    ckpt_start_moto
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    ckpt_banner "starting test services"
    ckpt_services_up
    if [[ $# -eq 0 ]]; then
        env | grep -E '^(DATABASE_URL|AWS_|CKPT_TEST_)' | sort
    else
        ckpt_run "$@"
    fi
fi
