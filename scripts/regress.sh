#!/usr/bin/env bash
# Runs the pg_regress suite (pg_test/sql/*.sql against pg_test/expected/*.out) against the
# server in PG* (run it under pg_virtualenv). Each file starts from a fresh database.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/../pg_test"
# setup.sql first: it defines the helpers the others use (all share one database).
tests="setup $(ls sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | grep -vx setup | sort)"
rm -rf results regression.diffs regression.out
"$PG_REGRESS" --inputdir=. --outputdir=. --dbname=omen_regress --load-extension=omendb \
    $tests || { cat regression.diffs 2>/dev/null | head -200; exit 1; }
