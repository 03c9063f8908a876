#!/usr/bin/env bash
# Migrations are append-only: a released migration never changes and never goes away.
#
#   scripts/check-migrations.sh            # check (CI runs this)
#   scripts/check-migrations.sh --update   # record new migrations as released
#
# migrations/RELEASED lists every released migration as `sha256  path` (sha256sum's format,
# so `sha256sum -c migrations/RELEASED` also works). The check fails if a listed file changed
# or vanished, or if a migration file is not listed. --update appends the unlisted files and
# never rewrites a listed one: to change a migration that was recorded but never merged, edit
# its line in RELEASED by hand.
set -euo pipefail

cd "$(dirname "$0")/.."
RELEASED=migrations/RELEASED
DIRS=(migrations/postgres migrations/sqlite)

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

update=0
case "${1:-}" in
"") ;;
--update) update=1 ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

sha256() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

# Every migration file now on disk, in a stable order.
current=()
for dir in "${DIRS[@]}"; do
    [[ -d $dir ]] || continue
    while IFS= read -r -d '' file; do
        current+=("$file")
    done < <(find "$dir" -type f -name '*.sql' -print0 | LC_ALL=C sort -z)
done

# The released list: path -> hash.
declare -A released=()
if [[ -f $RELEASED ]]; then
    line_no=0
    while IFS= read -r line || [[ -n $line ]]; do
        line_no=$((line_no + 1))
        [[ -z $line ]] && continue
        if [[ ! $line =~ ^([0-9a-f]{64})\ [\ *](.+)$ ]]; then
            echo "error: $RELEASED:$line_no: expected 'sha256  path', got: $line" >&2
            exit 1
        fi
        released["${BASH_REMATCH[2]}"]=${BASH_REMATCH[1]}
    done <"$RELEASED"
fi

# Released migrations must be unchanged.
problems=0
mapfile -t listed < <(printf '%s\n' "${!released[@]}" | LC_ALL=C sort)
for path in "${listed[@]}"; do
    [[ -n $path ]] || continue
    if [[ ! -f $path ]]; then
        echo "error: released migration $path was removed" >&2
        problems=$((problems + 1))
    elif [[ $(sha256 "$path") != "${released[$path]}" ]]; then
        echo "error: released migration $path was changed; add a new migration instead" >&2
        problems=$((problems + 1))
    fi
done

# New migrations must be recorded.
unlisted=()
for path in "${current[@]}"; do
    [[ -n ${released[$path]+set} ]] || unlisted+=("$path")
done

if [[ $problems -gt 0 ]]; then
    echo "migrations are append-only: $problems released migration(s) changed or removed" >&2
    exit 1
fi

if [[ $update == 1 ]]; then
    for path in "${unlisted[@]}"; do
        printf '%s  %s\n' "$(sha256 "$path")" "$path" >>"$RELEASED"
        echo "recorded $path"
    done
    [[ ${#unlisted[@]} -gt 0 ]] || echo "nothing to record"
    exit 0
fi

if [[ ${#unlisted[@]} -gt 0 ]]; then
    for path in "${unlisted[@]}"; do
        echo "error: migration $path is not listed in $RELEASED" >&2
    done
    echo "record new migrations with: scripts/check-migrations.sh --update (and commit $RELEASED)" >&2
    exit 1
fi

echo "ok: ${#released[@]} released migration(s) unchanged, none unlisted"
