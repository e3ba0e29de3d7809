#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster owned by the `postgres` user (PostgreSQL
# refuses to run as root): pgserver.sh start|stop BINDIR DATADIR PORT [extra postgres -c ...].
# The socket goes to DATADIR's parent-independent /tmp; connect with -h /tmp -p PORT -U postgres.
set -euo pipefail
action=$1 bindir=$2 datadir=$3 port=$4
shift 4
case "$action" in
start)
    if [ -f "$datadir/postmaster.pid" ]; then
        sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$datadir"
    mkdir -p "$datadir"
    chown postgres: "$datadir"
    sudo -u postgres "$bindir/initdb" -D "$datadir" -A trust -U postgres >/dev/null
    opts="-p $port -k /tmp -c listen_addresses=localhost -c fsync=off"
    for extra in "$@"; do opts="$opts -c $extra"; done
    sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -o "$opts" -l "$datadir/server.log" -w start >/dev/null
    ;;
stop)
    sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m fast stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: $0 start|stop BINDIR DATADIR PORT" >&2
    exit 2
    ;;
esac
