"""Throwaway PostgreSQL 15 servers for the integration tests (crash recovery, standby replay,
concurrency), run through scripts/pgserver.sh as the `postgres` user.

Every server a test starts is stopped when the test ends, however it ends (normal exit,
exception, Ctrl-C, SIGTERM): the Python counterpart of a shell `trap ... EXIT`. The data
directories (/tmp/omen-it-*) are removed after a passing test and kept after a failing one,
with their server.log, for a look.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PGSERVER = ROOT / "scripts" / "pgserver.sh"
BINDIR = Path("/usr/lib/postgresql/15/bin")

_servers: list["Server"] = []
_failed = False


class Server:
    """One cluster in /tmp/omen-it-NAME listening on PORT (socket in /tmp, and 127.0.0.1)."""

    def __init__(self, name: str, port: int, gucs: tuple[str, ...] = ()):
        self.name = name
        self.port = port
        self.datadir = Path(f"/tmp/omen-it-{name}")
        self.gucs = list(gucs)
        _servers.append(self)

    def _run(self, action: str, *gucs: str) -> None:
        subprocess.run([str(PGSERVER), action, str(BINDIR), str(self.datadir), str(self.port), *gucs],
                       check=True)

    def start(self) -> None:
        """initdb and start a fresh cluster."""
        self._run("start", *self.gucs)

    def restart(self) -> None:
        """Starts the existing cluster (after a crash: crash recovery; a base backup: a standby)."""
        self._run("restart", *self.gucs)

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every process exits at once, no checkpoint."""
        self._run("immediate")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("stop")

    def connect(self, dbname: str = "postgres", **kw) -> psycopg.Connection:
        kw.setdefault("autocommit", True)
        return psycopg.connect(host="/tmp", port=self.port, user="postgres", dbname=dbname, **kw)

    def env(self, dbname: str = "postgres") -> dict:
        """libpq environment for client programs (psql, pgbench, pg_basebackup)."""
        return dict(os.environ, PGHOST="/tmp", PGPORT=str(self.port), PGUSER="postgres",
                    PGDATABASE=dbname)

    def log_size(self) -> int:
        try:
            return (self.datadir / "server.log").stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What the server logged after byte `offset` of server.log."""
        with open(self.datadir / "server.log", "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.datadir / "server.log").read_text(errors="replace")
        except OSError:
            return "(no server.log)"
        return "\n".join(text.splitlines()[-lines:])


def as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    """Runs a PostgreSQL client program as the postgres user (files it writes belong to it)."""
    return subprocess.run(["sudo", "-u", "postgres", *cmd], check=True, **kw)


def wait_for(what: str, predicate, timeout: float = 60.0, interval: float = 0.1):
    """Polls `predicate` until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def vec_text(v) -> str:
    """The text form of a vector, exact for float32 values."""
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def load(conn, table: str, first_id: int, vectors) -> None:
    """COPYs rows (first_id + i, vectors[i]) into `table` (id, v)."""
    with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
        for i, v in enumerate(vectors):
            copy.write_row((first_id + i, vec_text(v)))


def check(condition: bool, message: str) -> None:
    """A test assertion that survives `python -O`."""
    if not condition:
        raise AssertionError(message)


def _cleanup() -> None:
    for s in reversed(_servers):
        try:
            s.stop()
        except Exception as e:  # keep stopping the others
            print(f"could not stop {s.datadir}: {e}", file=sys.stderr)
    for s in _servers:
        if _failed:
            if s.datadir.exists():
                print(f"kept {s.datadir} (server.log) for inspection", file=sys.stderr)
        else:
            shutil.rmtree(s.datadir, ignore_errors=True)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run(main) -> None:
    """Runs a test's `main()`, then stops its servers; exit status 1 on any failure."""
    global _failed
    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    started = time.monotonic()
    try:
        main()
    except BaseException as e:
        _failed = True
        for s in _servers:
            print(f"--- tail of {s.datadir}/server.log:\n{s.log_tail()}", file=sys.stderr)
        if isinstance(e, SystemExit):
            raise
        traceback.print_exc()
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"passed in {time.monotonic() - started:.1f} s")
