#!/usr/bin/env bash
# `make test`: every test of the project, in order; stops at the first failure.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
started=$(date +%s)
step() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local t0=$(date +%s)
    "$@"
    echo "=== $name: ok ($(( $(date +%s) - t0 )) s)"
}
step "omen-core: unit and property tests" cargo test -p omen-core
step "pgrx tests on PostgreSQL 15" cargo pgrx test pg15 --runas postgres --pgdata /tmp/omen-pgrx-test
step "install into PostgreSQL 15" cargo pgrx install --pg-config "$PG15_CONFIG"
step "pg_regress suite (pg_virtualenv, PostgreSQL 15)" pg_virtualenv -v 15 scripts/regress.sh
step "Python client test (psycopg + pgvector-python)" pg_virtualenv -v 15 "$PY" tests/test_client.py
DATA=$(data_dir)
step "recall@10 through SQL (siftsmall, bigann10k, fmnistsmall)" \
    pg_virtualenv -v 15 "$PY" tests/test_recall.py "$DATA/siftsmall" "$DATA/bigann10k" "$DATA/fmnistsmall"
step "churn: delete 10% / insert 10% / VACUUM, ten rounds, then with VACUUM concurrent" \
    pg_virtualenv -v 15 "$PY" tests/test_churn.py "$DATA/siftsmall"
# Servers of their own (scripts/pgserver.sh, ports 54340-54347, /tmp/omen-it-*): these
# tests crash, replicate and load them, which pg_virtualenv's cluster is not for.
step "crash recovery: killed during inserts, CREATE INDEX and VACUUM (PostgreSQL 15)" "$PY" tests/crash_recovery.py
step "hot standby replays the omen index WAL (PostgreSQL 15)" "$PY" tests/standby_replay.py
step "concurrent inserts and queries under pgbench, buffered and in place (PostgreSQL 15)" "$PY" tests/concurrency.py
step "insert buffer: crash during a merge, no workers, DDL during a merge (PostgreSQL 15)" "$PY" tests/insert_buffer.py
step "beside pgvector on PostgreSQL 18" scripts/test_pg18.sh
echo
echo "all tests passed in $(( $(date +%s) - started )) s"
