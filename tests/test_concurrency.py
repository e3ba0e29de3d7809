"""Concurrent inserts and queries on one omen index, driven by pgbench (PostgreSQL 15).

`items(id serial primary key, v vector(16))` starts with 3,000 random rows and an omen
index. Two pgbench runs go at once for 15 s: 8 clients running single-row INSERTs of a
vector built by random() in SQL (at most 400 per second together), and 8 clients each running a nearest-neighbour query
(ORDER BY v <-> random vector LIMIT 10, through the omen index) whose script raises
division_by_zero unless it got 10 distinct rows. Both pgbench runs must exit 0 and report
no failed transactions and no aborted client. Afterwards: omen_check is ok (structure sound,
every table row reachable through the index, none indexed twice), the index has a node or a
buffered entry per row, and recall@10 of 100 random queries against the exact answer of a
sequential scan (enable_indexscan = off) is at least 0.9.

Two rounds, on fresh tables: with the insert buffer (buffer_threshold 200, so background
merge workers run all along; one must be seen in pg_stat_activity, named for the index,
while the clients run; afterwards omen_flush leaves a node per row), and with buffer = off
(inserts go into the graph in place).
"""

import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pgcluster import Database, omen_check, phase, plan, recall, say, vec_text

DIM = 16
INITIAL = 3000
CLIENTS = 8
SECONDS = 15
# Inserts per second, all clients together: unthrottled, buffered inserts outrun the merge
# on two cores by far, and the omen_flush after the run would take minutes.
INSERT_RATE = 400
THRESHOLD = 200
K = 10
QUERIES = 100
MIN_RECALL = 0.9

RANDOM_VECTOR = f"ARRAY(SELECT random() FROM generate_series(1, {DIM}))::real[]::vector"
INSERT_SQL = f"INSERT INTO items (v) SELECT {RANDOM_VECTOR};\n"
KNN = f"SELECT id FROM items ORDER BY v <-> (SELECT {RANDOM_VECTOR}) LIMIT {K}"
# 1 / false::int: division_by_zero (the client aborts, pgbench fails) unless K distinct rows came back
QUERY_SQL = f"SELECT 1 / (count(*) = {K} AND count(DISTINCT id) = {K})::int FROM ({KNN}) nn;\n"


def pgbench(db: Database, script: Path, options: str = "", rate: int | None = None) -> subprocess.Popen:
    env = db.env()
    if options:
        env["PGOPTIONS"] = options
    limit = ["-R", str(rate)] if rate else []
    args = f"-n -c {CLIENTS} -j {CLIENTS} -T {SECONDS} -f {script}".split()
    return subprocess.Popen(
        [str(db.server.bindir / "pgbench"), *args, *limit],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(name: str, proc: subprocess.Popen, out: str) -> int:
    """Checks a finished pgbench run had no failure; returns its transaction count."""
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    problems = [line for line in out.splitlines() if "aborted" in line or "ERROR" in line]
    assert (
        proc.returncode == 0 and done and int(done.group(1)) > 0 and failed and failed.group(1) == "0" and not problems
    ), f"pgbench {name} (exit {proc.returncode}) reported failures:\n{out}"
    tps = re.search(r"tps = ([\d.]+)", out)
    say(
        f"pgbench {name}: {done.group(1)} transactions, 0 failed, no client aborted"
        f" ({tps.group(1) if tps else '?'} tps)"
    )
    return int(done.group(1))


def watch_workers(db: Database, seen: list, stop: threading.Event) -> None:
    """Records the merge workers pg_stat_activity shows until `stop` is set."""
    with db.connect() as conn:
        while not stop.is_set():
            for row in conn.execute(
                "SELECT backend_type, application_name FROM pg_stat_activity WHERE backend_type = 'omen merge worker'"
            ):
                if row not in seen:
                    seen.append(row)
            time.sleep(0.05)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "in_place"])
def test_pgbench_inserts_and_queries(db, buffered):
    rng = np.random.default_rng(31337 if buffered else 31338)
    options = f"buffer_threshold = {THRESHOLD}" if buffered else "buffer = off"
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id serial PRIMARY KEY, v vector({DIM}))")
        with conn.cursor().copy("COPY items (v) FROM STDIN") as copy:
            for v in rng.random((INITIAL, DIM), dtype=np.float32):
                copy.write_row((vec_text(v),))
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v vector_l2_ops) WITH ({options})")
        conn.execute("VACUUM ANALYZE items")
        conn.execute("SET enable_seqscan = off")
        explained = plan(conn, QUERY_SQL)
        assert "Index Scan using items_v" in explained, f"the pgbench query does not use the omen index:\n{explained}"
    say(
        f"{INITIAL} rows indexed WITH ({options}); pgbench for {SECONDS} s: {CLIENTS} clients inserting, "
        f"{CLIENTS} clients querying"
    )

    seen: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_workers, args=(db, seen, stop))
    watcher.start()
    try:
        with tempfile.TemporaryDirectory(prefix="omen-it-pgbench-") as tmp:
            insert_script, query_script = Path(tmp) / "insert.sql", Path(tmp) / "query.sql"
            insert_script.write_text(INSERT_SQL)
            query_script.write_text(QUERY_SQL)
            with phase(f"pgbench, {SECONDS} s"):
                inserts = pgbench(db, insert_script, rate=INSERT_RATE)
                queries = pgbench(db, query_script, "-c enable_seqscan=off")
                outputs = [p.communicate(timeout=SECONDS + 60)[0] for p in (inserts, queries)]
            failures = []
            for name, proc, out in zip(("inserts", "queries"), (inserts, queries), outputs, strict=True):
                try:
                    count = finish(name, proc, out)
                    if name == "inserts":
                        inserted = count
                except AssertionError as e:
                    failures.append(str(e))
            assert not failures, "\n".join(failures)
    finally:
        stop.set()
        watcher.join()
    if buffered:
        assert ("omen merge worker", "omen merge: items_v") in seen, (
            f"no merge worker for items_v was seen in pg_stat_activity: {seen}"
        )
        say(f"pg_stat_activity showed the merge worker: backend_type '{seen[0][0]}', application_name '{seen[0][1]}'")

    with db.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        assert rows == INITIAL + inserted, f"{rows} rows, expected {INITIAL} + {inserted}"
        c = omen_check(conn, "items_v")
        nodes, buffered_now, table_rows = c["nodes"], c["buffered"], c["table_rows"]
        assert nodes + buffered_now == rows, (
            f"the index has {nodes} nodes and {buffered_now} buffered entries for {rows} rows"
        )
        say(f"omen_check ok: {nodes} nodes and {buffered_now} buffered entries, all reachable, {table_rows} table rows")
        if buffered:
            with phase("omen_flush"):
                conn.execute("SELECT omen_flush('items_v')")
            c = omen_check(conn, "items_v")
            assert c["nodes"] == rows and c["buffered"] == 0, f"after omen_flush: {c}"
            nodes = c["nodes"]
            say(f"after omen_flush: omen_check ok, {nodes} nodes, nothing buffered")

        queries = [vec_text(q) for q in rng.random((QUERIES, DIM), dtype=np.float32)]
        sql = f"SELECT id FROM items ORDER BY v <-> %s::vector LIMIT {K}"
        conn.execute("SET enable_indexscan = off")
        exact = [{r[0] for r in conn.execute(sql, (q,))} for q in queries]
        explained = plan(conn, sql, (queries[0],))
        assert "items_v" not in explained, f"the exact answer should come from a sequential scan:\n{explained}"
        conn.execute("RESET enable_indexscan")
        conn.execute("SET enable_seqscan = off")
        explained = plan(conn, sql, (queries[0],))
        assert "Index Scan using items_v" in explained, f"the query does not use the omen index:\n{explained}"
        r = recall(conn, sql, queries, exact, K)
        assert r >= MIN_RECALL, f"recall@{K} {r:.3f} is below {MIN_RECALL}"
        say(f"recall@{K} of {QUERIES} random queries against a sequential scan: {r:.3f}")
