#!/usr/bin/env bash
# Installs omendb into the PostgreSQL of PG_CONFIG: `cargo pgrx install` (the library, the
# generated omendb--<version>.sql and the upgrade scripts of sql/), plus the kept install
# script of 0.1.0, so that `CREATE EXTENSION omendb VERSION '0.1.0'` and
# `ALTER EXTENSION omendb UPDATE` work there too.
#   scripts/install.sh PG_CONFIG [more cargo pgrx install arguments, e.g. --release]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: scripts/install.sh PG_CONFIG [cargo pgrx install arguments]}
shift
cargo pgrx install --pg-config "$config" "$@"
cp sql/omendb--0.1.0.sql "$("$config" --sharedir)/extension/"
