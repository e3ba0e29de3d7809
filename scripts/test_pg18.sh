#!/usr/bin/env bash
# Builds omendb for the PostgreSQL 18 that ships with pgvector (PEERS.md) and runs the tests
# that need pgvector beside omendb (pytest's `pg18` marker: they start a throwaway server of
# that PostgreSQL 18 themselves). `make test` runs them too, in its one pytest run.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
scripts/install.sh "$(pg18_home)/bin/pg_config" >/dev/null
exec "$PY" -m pytest -v -m pg18 "$@"
