#!/usr/bin/env bash
# `make demo [DATA=folder]`: run under pg_virtualenv (which sets PGHOST, PGPORT, PGUSER).
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$PY" "$(dirname "$0")/demo.py" "$@"
