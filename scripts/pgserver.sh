#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster owned by the `postgres` user (PostgreSQL
# refuses to run as root):
#   pgserver.sh start     BINDIR DATADIR PORT [guc=value ...]  a fresh cluster (initdb) in DATADIR
#   pgserver.sh restart   BINDIR DATADIR PORT [guc=value ...]  (re)starts the existing cluster in
#                         DATADIR, no initdb: after a crash, or a standby made by pg_basebackup
#   pgserver.sh stop      BINDIR DATADIR PORT                  fast shutdown
#   pgserver.sh immediate BINDIR DATADIR PORT                  immediate shutdown: no checkpoint,
#                         the next start runs crash recovery (the way to simulate a crash)
# Servers run with fsync=off unless a guc says fsync=on (later settings win).
# The socket goes to DATADIR's parent-independent /tmp; connect with -h /tmp -p PORT -U postgres.
set -euo pipefail
action=$1 bindir=$2 datadir=$3 port=$4
shift 4
run_server() {
    local opts="-p $port -k /tmp -c listen_addresses=localhost -c fsync=off"
    for extra in "$@"; do opts="$opts -c $extra"; done
    # sudo drops the environment: OMEN_SIMD (the SIMD level omen's kernels may use) is passed on.
    sudo -u postgres ${OMEN_SIMD:+env OMEN_SIMD="$OMEN_SIMD"} "$bindir/pg_ctl" -D "$datadir" -o "$opts" \
        -l "$datadir/server.log" -w -t 120 start >/dev/null
}
case "$action" in
start)
    if [ -f "$datadir/postmaster.pid" ]; then
        sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$datadir"
    mkdir -p "$datadir"
    chown postgres: "$datadir"
    sudo -u postgres "$bindir/initdb" -D "$datadir" -A trust -U postgres >/dev/null
    run_server "$@"
    ;;
restart)
    if [ -f "$datadir/postmaster.pid" ]; then
        sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m fast stop >/dev/null 2>&1 || true
    fi
    run_server "$@"
    ;;
stop)
    sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m fast stop >/dev/null 2>&1 || true
    ;;
immediate)
    sudo -u postgres "$bindir/pg_ctl" -D "$datadir" -m immediate stop >/dev/null
    ;;
*)
    echo "usage: $0 start|restart|stop|immediate BINDIR DATADIR PORT [guc=value ...]" >&2
    exit 2
    ;;
esac
