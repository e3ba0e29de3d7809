#!/usr/bin/env bash
# Builds omendb for the PostgreSQL 18 that ships with pgvector (PEERS.md), starts a
# throwaway server of it and runs the tests that need pgvector beside omendb.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
PG18=$(pg18_home)
cargo pgrx install --pg-config "$PG18/bin/pg_config" >/dev/null
DATA=/tmp/omen-pg18-test PORT=54318
scripts/pgserver.sh start "$PG18/bin" "$DATA" "$PORT"
trap 'scripts/pgserver.sh stop "$PG18/bin" "$DATA" "$PORT"' EXIT
export PGHOST=/tmp PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
"$PY" tests/test_pgvector_compat.py
"$PY" tests/test_recall.py --pgvector "$(data_dir)/siftsmall"
