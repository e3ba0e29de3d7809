#!/usr/bin/env bash
# `make test`, `make test-quick`, `make lint`: the project's checks, in order; stops at the
# first step that fails.
#   scripts/test.sh         everything: lint, unit tests, pgrx tests, pg_regress, then the
#                           integration tests in one pytest run (PostgreSQL 15 and 18)
#   scripts/test.sh quick   lint, omen-core's unit tests, pg_regress on PostgreSQL 15
#   scripts/test.sh lint    rustfmt, clippy, ruff check, ruff format, the dev profile
# Extra arguments after the mode go to pytest (scripts/test.sh all -k churn).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
mode=${1:-all}
shift || true
started=$(date +%s)
lint() {
    step "rustfmt" cargo fmt --check
    step "clippy (all targets, warnings are errors)" cargo clippy --workspace --all-targets -- -D warnings
    step "ruff check (tests, scripts, bench)" "$PEERS_VENV/bin/ruff" check
    step "ruff format --check" "$PEERS_VENV/bin/ruff" format --check
    step "dev profile optimizes the hot crates" "$PEERS_VENV/bin/python" scripts/check_profile.py
}

regress15() {
    step "install into PostgreSQL 15" scripts/install.sh "$PG15_CONFIG"
    step "pg_regress suite (pg_virtualenv, PostgreSQL 15)" pg_virtualenv -v 15 scripts/regress.sh
}

case "$mode" in
lint)
    lint
    ;;
quick)
    lint
    step "omen-core: unit and property tests" cargo test -p omen-core
    regress15
    ;;
all)
    lint
    step "omen-core: unit and property tests" cargo test -p omen-core
    step "pgrx tests on PostgreSQL 15" cargo pgrx test pg15 --runas postgres --pgdata /tmp/omen-pgrx-test
    regress15
    step "PostgreSQL 16 and 18: pgrx tests, install, pg_regress (scripts/test_matrix.sh)" scripts/test_matrix.sh 16 18
    step "install into PostgreSQL 18 (the pgvector peer)" scripts/install.sh "$(pg18_home)/bin/pg_config"
    data_dir >/dev/null # fail here, with its message, when the data sets are missing
    # One pytest run: throwaway servers of their own (scripts/pgserver.sh, free ports, data in
    # /tmp/omen-it-*, kept only when a test fails) on PostgreSQL 15 and on the wheel's 18.
    step "integration tests (pytest)" "$PY" -m pytest -v --durations=0 --durations-min=1 "$@"
    ;;
*)
    echo "usage: $0 [all|quick|lint] [pytest arguments]" >&2
    exit 2
    ;;
esac
echo
echo "$mode: passed in $(($(date +%s) - started)) s"
