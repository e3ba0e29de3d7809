"""Crash recovery of omen indexes (PostgreSQL 15, fsync on, killed with `pg_ctl stop -m immediate`).

1. Inserts: `items(id int primary key, v vector(16))` with an omen index built on 4,000
   rows; a client runs single-row INSERT transactions (BEGIN; INSERT; COMMIT) and records
   every id whose COMMIT returned; the server is killed in the middle of that stream and
   restarted (crash recovery replays the build's log_newpage_range images and the inserts'
   GenericXLog records). Then: omen_check is ok (structure sound, every table row
   reachable), every committed row is in the table, and every row the stream inserted, plus
   500 random rows of the initial load, is its own nearest neighbour through the index
   (ORDER BY v <-> its vector LIMIT 1, enable_seqscan = off; vectors are distinct random
   floats, so the nearest row is the row itself). Two rounds: the first crash replays from
   before the index build; in the second a CHECKPOINT runs in the middle of the stream, so
   recovery starts from pages flushed while inserts went on. After recovery, new inserts
   still work and omen_check stays ok.
2. CREATE INDEX: the server is killed while a 20,000-row omen index is being built (the
   graph phase of pg_stat_progress_create_index). After restart the server answers, the
   table is intact, and the index does not exist; with CREATE INDEX CONCURRENTLY the index
   is left invalid, is not used by queries and DROP INDEX removes it. A rebuild then
   succeeds and passes omen_check.

Run as root (the server runs as `postgres`): tests/crash_recovery.py
"""

import random
import re
import threading
import time

import numpy as np
import psycopg

import pgcluster
from pgcluster import check, wait_for

PORT = 54340
DIM = 16
INITIAL = 4000
BIG = 20000
SAMPLE_INITIAL = 500


def vec_text(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def load(conn, table: str, first_id: int, vectors: np.ndarray) -> None:
    with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
        for i, v in enumerate(vectors):
            copy.write_row((first_id + i, vec_text(v)))


def omen_check(conn, index: str) -> tuple:
    ok, nodes, reachable, rows, problems = conn.execute(
        "SELECT ok, nodes, reachable, table_rows, problems FROM omen_check(%s::regclass)", (index,)).fetchone()
    check(ok, f"omen_check({index}) failed: nodes={nodes} reachable={reachable} table_rows={rows} "
              f"problems={problems}")
    return nodes, reachable, rows


class InsertStream:
    """A client running single-row INSERT transactions until the server goes away."""

    def __init__(self, server: pgcluster.Server, first_id: int, seed: int):
        self.server = server
        self.next_id = first_id
        self.rng = np.random.default_rng(seed)
        self.committed: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.server.connect() as conn:
                while True:
                    i = self.next_id
                    with conn.transaction():  # BEGIN ... COMMIT
                        conn.execute("INSERT INTO items (id, v) VALUES (%s, %s)",
                                     (i, vec_text(self.rng.random(DIM, dtype=np.float32))))
                    self.committed.append(i)  # the COMMIT returned
                    self.next_id += 1
        except psycopg.OperationalError as e:  # the crash
            self.error = e
        except BaseException as e:
            self.error = e

    def start(self) -> None:
        self.thread.start()


def verify_items(server: pgcluster.Server, committed: list[int], stream_from: int, label: str) -> int:
    """After a restart: omen_check, committed rows present, every stream row (and a sample of
    the initial rows) found through the index as its own nearest neighbour."""
    with server.connect() as conn:
        nodes, reachable, rows = omen_check(conn, "items_v")
        present = {r[0]: r[1] for r in conn.execute(
            "SELECT id, v::text FROM items WHERE id >= %s", (stream_from,))}
        lost = sorted(set(committed) - present.keys())
        check(not lost, f"{len(lost)} committed rows are missing after recovery, e.g. {lost[:10]}")
        extra = len(present) - len(set(committed))
        sample = conn.execute(
            "SELECT id, v::text FROM items WHERE id < %s ORDER BY random() LIMIT %s",
            (INITIAL, SAMPLE_INITIAL)).fetchall()
        probes = list(present.items()) + sample
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (probes[0][1],)))
        check("items_v" in plan, f"the probe query does not use the omen index:\n{plan}")
        misses = []
        for i, v in probes:
            got = conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (v,)).fetchone()
            if got is None or got[0] != i:
                misses.append((i, got and got[0]))
        check(not misses, f"{len(misses)} of {len(probes)} rows are not their own nearest neighbour "
                          f"through the index, e.g. (id, got) {misses[:10]}")
    print(f"  {label}: omen_check ok ({nodes} nodes, {rows} table rows, all reachable); "
          f"{len(committed)} committed stream rows present ({extra} more whose COMMIT was cut off); "
          f"{len(probes)} rows ({len(present)} stream + {len(sample)} initial) found through the index")
    return len(present)


def restart_after_crash(server: pgcluster.Server) -> str:
    """Restarts a crashed server; checks that it ran crash recovery and says what it replayed."""
    offset = server.log_size()
    server.restart()
    log = server.log_since(offset)
    starts = re.search(r"redo starts at (\S+)", log)
    done = re.search(r"redo done at (\S+)", log)
    check("was interrupted" in log and starts and done, f"the restart did not run crash recovery:\n{log}")
    return f"crash recovery replayed WAL from {starts.group(1)} to {done.group(1)}"


def crash_during_inserts(server: pgcluster.Server, first_id: int, seed: int, checkpoint: bool) -> None:
    stream = InsertStream(server, first_id, seed)
    stream.start()
    if checkpoint:
        wait_for("400 commits", lambda: len(stream.committed) >= 400 or stream.error)
        with server.connect() as conn:
            conn.execute("CHECKPOINT")
    target = len(stream.committed) + 1200
    wait_for(f"{target} commits", lambda: len(stream.committed) >= target or stream.error, timeout=90)
    check(stream.error is None, f"the insert stream failed before the crash: {stream.error!r}")
    time.sleep(random.uniform(0, 0.05))  # land anywhere inside a transaction
    server.crash()
    stream.thread.join(timeout=30)
    check(not stream.thread.is_alive(), "the insert stream did not notice the crash")
    check(isinstance(stream.error, psycopg.OperationalError),
          f"the insert stream ended with {stream.error!r}, not a lost connection")
    committed = list(stream.committed)
    print(f"  killed the server (immediate) after {len(committed)} committed inserts"
          f"{' and a CHECKPOINT in the middle' if checkpoint else ''}")
    print(f"  restarted: {restart_after_crash(server)}")
    verify_items(server, committed, first_id, "after recovery")


def crash_during_build(server: pgcluster.Server, index: str, concurrently: bool) -> None:
    result: dict = {}

    def build():
        try:
            with server.connect() as conn:
                how = "CONCURRENTLY " if concurrently else ""
                conn.execute(f"CREATE INDEX {how}{index} ON big USING omen (v vector_l2_ops)")
                result["done"] = True
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=build, daemon=True)
    t.start()
    with server.connect() as conn:
        phase = wait_for("the graph build phase", lambda: result or conn.execute(
            "SELECT phase FROM pg_stat_progress_create_index WHERE phase LIKE %s",
            ("%building graph%",)).fetchone(), timeout=60, interval=0.02)
    check(not result, f"CREATE INDEX ended before the crash: {result}")
    time.sleep(random.uniform(0.2, 1.0))
    server.crash()
    t.join(timeout=30)
    check(isinstance(result.get("error"), psycopg.OperationalError),
          f"CREATE INDEX should have lost its connection, got {result}")
    print(f"  killed the server during CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}"
          f"({phase[0]})")
    print(f"  restarted: {restart_after_crash(server)}")
    with server.connect() as conn:
        n = conn.execute("SELECT count(*) FROM big").fetchone()[0]
        check(n == BIG, f"big has {n} rows after recovery, not {BIG}")
        state = conn.execute(
            "SELECT i.indisvalid, i.indisready FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (index,)).fetchone()
        if concurrently:
            check(state is not None and not state[0],
                  f"the interrupted CREATE INDEX CONCURRENTLY should leave an invalid index, found {state}")
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(
                "EXPLAIN SELECT id FROM big ORDER BY v <-> %s::vector LIMIT 5", (vec_text(np.zeros(DIM)),)))
            check(index not in plan, f"a query uses the invalid index:\n{plan}")
            conn.execute(f"DROP INDEX {index}")
            print(f"  after recovery: {n} rows, {index} left invalid, not used by queries, dropped")
        else:
            check(state is None, f"the interrupted CREATE INDEX left {index} behind: {state}")
            print(f"  after recovery: {n} rows, {index} does not exist")
        omen_check(conn, "items_v")


def main() -> None:
    server = pgcluster.Server("crash", PORT, ("fsync=on",))
    server.start()
    rng = np.random.default_rng(20261125)
    with server.connect() as conn:
        check(conn.execute("SHOW fsync").fetchone()[0] == "on", "fsync must be on")
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "items", 0, rng.random((INITIAL, DIM), dtype=np.float32))
        conn.execute("CREATE INDEX items_v ON items USING omen (v vector_l2_ops)")
        omen_check(conn, "items_v")
    print(f"inserts: {INITIAL} rows indexed, single-row INSERT transactions streaming")

    crash_during_inserts(server, 100_000, seed=1, checkpoint=False)
    crash_during_inserts(server, 200_000, seed=2, checkpoint=True)
    with server.connect() as conn:
        for i in range(300):
            conn.execute("INSERT INTO items (id, v) VALUES (%s, %s)",
                         (300_000 + i, vec_text(rng.random(DIM, dtype=np.float32))))
        nodes, _, rows = omen_check(conn, "items_v")
    print(f"  300 more inserts after recovery: omen_check ok ({nodes} nodes, {rows} rows)")

    print(f"CREATE INDEX: {BIG} rows")
    with server.connect() as conn:
        conn.execute(f"CREATE TABLE big (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "big", 0, rng.random((BIG, DIM), dtype=np.float32))
        conn.execute("CHECKPOINT")
    crash_during_build(server, "big_v", concurrently=False)
    crash_during_build(server, "big_v", concurrently=True)
    with server.connect() as conn:
        conn.execute("CREATE INDEX big_v ON big USING omen (v vector_l2_ops)")
        nodes, _, rows = omen_check(conn, "big_v")
    print(f"  rebuilt big_v: omen_check ok ({nodes} nodes, {rows} rows)")


if __name__ == "__main__":
    pgcluster.run(main)
