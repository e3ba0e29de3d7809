#!/usr/bin/env bash
# Runs the pg_regress suite (pg_test/sql/*.sql against pg_test/expected/*.out) against the
# server in PG* (run it under pg_virtualenv, or set PGHOST/PGPORT/PGUSER). Another
# PostgreSQL version's server is driven with REGRESS_BINDIR (that version's bin/, for its
# psql) and optionally PG_REGRESS (Debian's PostgreSQL 15 pg_regress by default); see
# scripts/test_matrix.sh. Where a version's output legitimately differs (message wording,
# EXPLAIN), pg_test/expected/NAME_1.out holds the alternative, the pg_regress way.
# REGRESS_OUTDIR puts results/ and regression.diffs elsewhere than pg_test/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/../pg_test"
# setup.sql first: it defines the helpers the others use (all share one database).
tests="setup $(ls sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | grep -vx setup | sort)"
bindir=()
if [ -n "${REGRESS_BINDIR:-}" ]; then bindir=(--bindir="$REGRESS_BINDIR"); fi
out=${REGRESS_OUTDIR:-.}
mkdir -p "$out"
rm -rf "$out/results" "$out/regression.diffs" "$out/regression.out"
"$PG_REGRESS" --inputdir=. --outputdir="$out" --dbname=omen_regress --load-extension=omendb "${bindir[@]}" \
    $tests || { cat "$out/regression.diffs" 2>/dev/null | head -200; exit 1; }
