"""Crash recovery of omen indexes (PostgreSQL 15, fsync on, killed with `pg_ctl stop -m immediate`).

1. Inserts: `items(id int primary key, v vector(16))` with an omen index built on 4,000
   rows; a client runs single-row INSERT transactions (BEGIN; INSERT; COMMIT) and records
   every id whose COMMIT returned; the server is killed in the middle of that stream and
   restarted (crash recovery replays the build's log_newpage_range images and the inserts'
   GenericXLog records: insert-buffer appends, and the merges of the background workers
   that the buffer's default threshold starts during the stream). Then: omen_check is ok
   (structure sound, every table row reachable), every committed row is in the table, and
   every row the stream inserted, plus 500 random rows of the initial load, is its own
   nearest neighbour through the index
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
3. VACUUM: `vac(id int, v vector(64))` (autovacuum off, no index but the omen one) with an
   omen index on 20,000 random rows, 30% of them deleted. `VACUUM vac` runs from one
   connection while another polls pg_stat_progress_vacuum and omen_index_info; once the
   phase is 'vacuuming indexes' and nodes are marked deleted, the server is killed 0.2-1.5 s
   later, in the repair. After restart the index must still hold nodes marked deleted (the
   kill landed in the middle of the index VACUUM). Otherwise the attempt says where it
   landed and is repeated, with a table twice as big if VACUUM had already finished; the
   test fails if none of 3 attempts lands in the middle. After each recovery: omen_check is
   ok, nodes + deleted nodes + free slots account for every slot of the index, 3 full scans
   through the index (enable_seqscan off, a list that can grow to every node) return each
   live row once and no deleted row, the 10 nearest rows to 100 deleted rows' vectors
   are all live, and 300 sampled rows are their own nearest neighbour (search_list_size
   100; the sample is drawn before the VACUUM from rows that are, since a fresh build
   misses a node or two per ten thousand on this data): all 300 if the kill came before any
   repair, at least 95% once the repair has rewired part of the graph. Then VACUUM again finishes the
   deletes: no node marked deleted, a free slot per deleted row, the same number of pages,
   omen_check ok, the same full scans (the probes may miss 5%: the repair rewired the
   graph). Last, 1,000 inserts, most into heap TIDs of deleted rows, merged from the insert
   buffer by omen_flush, take free slots (the index grows by at most 3 pages plus the
   buffer's own pages) and everything above still holds.
"""

import contextlib
import random
import re
import threading
import time

import numpy as np
import psycopg
import pytest

from pgcluster import Database, load, omen_check, phase, plan, say, vec_text, wait_for

DIM = 16
INITIAL = 4000
BIG = 20000
SAMPLE_INITIAL = 500
VAC_ROWS = 20000
VAC_DIM = 64
VAC_DELETE = 0.3
VAC_SAMPLE = 300
VAC_INSERT = 1000
# Pages the insert buffer takes for VAC_INSERT entries of VAC_DIM dimensions (25 per page:
# a 12-byte header, a 48-byte code, the 256-byte vector), kept for the next buffered inserts
# after the merge.
BUFFER_PAGES = -(-VAC_INSERT // 25)
VAC_ATTEMPTS = 3


def checked(conn, index: str) -> tuple:
    """omen_check(index), which must be ok: (nodes, reachable, table rows)."""
    c = omen_check(conn, index)
    return c["nodes"], c["reachable"], c["table_rows"]


class InsertStream:
    """A client running single-row INSERT transactions until the server goes away."""

    def __init__(self, db: Database, first_id: int, seed: int):
        self.db = db
        self.next_id = first_id
        self.rng = np.random.default_rng(seed)
        self.committed: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.db.connect() as conn:
                while True:
                    i = self.next_id
                    with conn.transaction():  # BEGIN ... COMMIT
                        conn.execute(
                            "INSERT INTO items (id, v) VALUES (%s, %s)",
                            (i, vec_text(self.rng.random(DIM, dtype=np.float32))),
                        )
                    self.committed.append(i)  # the COMMIT returned
                    self.next_id += 1
        except psycopg.OperationalError as e:  # the crash
            self.error = e
        except BaseException as e:  # noqa: BLE001 -- the test's thread reports it
            self.error = e

    def start(self) -> None:
        self.thread.start()


def verify_items(db: Database, committed: list[int], stream_from: int, label: str) -> int:
    """After a restart: omen_check, committed rows present, every stream row (and a sample of
    the initial rows) found through the index as its own nearest neighbour."""
    with db.connect() as conn:
        nodes, _, rows = checked(conn, "items_v")
        present = {r[0]: r[1] for r in conn.execute("SELECT id, v::text FROM items WHERE id >= %s", (stream_from,))}
        lost = sorted(set(committed) - present.keys())
        assert not lost, f"{len(lost)} committed rows are missing after recovery, e.g. {lost[:10]}"
        extra = len(present) - len(set(committed))
        sample = conn.execute(
            "SELECT id, v::text FROM items WHERE id < %s ORDER BY random() LIMIT %s", (INITIAL, SAMPLE_INITIAL)
        ).fetchall()
        probes = list(present.items()) + sample
        conn.execute("SET enable_seqscan = off")
        explained = plan(conn, "SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (probes[0][1],))
        assert "items_v" in explained, f"the probe query does not use the omen index:\n{explained}"
        misses = []
        for i, v in probes:
            got = conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (v,)).fetchone()
            if got is None or got[0] != i:
                misses.append((i, got and got[0]))
        assert not misses, (
            f"{len(misses)} of {len(probes)} rows are not their own nearest neighbour "
            f"through the index, e.g. (id, got) {misses[:10]}"
        )
    say(
        f"{label}: omen_check ok ({nodes} nodes, {rows} table rows, all reachable); "
        f"{len(committed)} committed stream rows present ({extra} more whose COMMIT was cut off); "
        f"{len(probes)} rows ({len(present)} stream + {len(sample)} initial) found through the index"
    )
    return len(present)


def restart_after_crash(db: Database) -> str:
    """Restarts a crashed server; checks that it ran crash recovery and says what it replayed."""
    offset = db.server.log_size()
    db.server.restart()
    log = db.server.log_since(offset)
    starts = re.search(r"redo starts at (\S+)", log)
    done = re.search(r"redo done at (\S+)", log)
    assert "was interrupted" in log and starts and done, f"the restart did not run crash recovery:\n{log}"
    return f"crash recovery replayed WAL from {starts.group(1)} to {done.group(1)}"


def crash_during_inserts(db: Database, first_id: int, seed: int, checkpoint: bool) -> None:
    stream = InsertStream(db, first_id, seed)
    stream.start()
    if checkpoint:
        wait_for("400 commits", lambda: len(stream.committed) >= 400 or stream.error)
        with db.connect() as conn:
            conn.execute("CHECKPOINT")
    target = len(stream.committed) + 1200
    wait_for(f"{target} commits", lambda: len(stream.committed) >= target or stream.error, timeout=90)
    assert stream.error is None, f"the insert stream failed before the crash: {stream.error!r}"
    time.sleep(random.uniform(0, 0.05))  # land anywhere inside a transaction
    db.server.crash()
    stream.thread.join(timeout=30)
    assert not stream.thread.is_alive(), "the insert stream did not notice the crash"
    assert isinstance(stream.error, psycopg.OperationalError), (
        f"the insert stream ended with {stream.error!r}, not a lost connection"
    )
    committed = list(stream.committed)
    say(
        f"killed the server (immediate) after {len(committed)} committed inserts"
        f"{' and a CHECKPOINT in the middle' if checkpoint else ''}"
    )
    say(f"restarted: {restart_after_crash(db)}")
    verify_items(db, committed, first_id, "after recovery")


def crash_during_build(db: Database, index: str, concurrently: bool) -> None:
    result: dict = {}

    def build():
        try:
            with db.connect() as conn:
                how = "CONCURRENTLY " if concurrently else ""
                conn.execute(f"CREATE INDEX {how}{index} ON big USING omen (v vector_l2_ops)")
                result["done"] = True
        except BaseException as e:  # noqa: BLE001 -- the test's thread reports it
            result["error"] = e

    t = threading.Thread(target=build, daemon=True)
    t.start()
    with db.connect() as conn:
        building = wait_for(
            "the graph build phase",
            lambda: (
                result
                or conn.execute(
                    "SELECT phase FROM pg_stat_progress_create_index WHERE phase LIKE %s", ("%building graph%",)
                ).fetchone()
            ),
            timeout=60,
            interval=0.02,
        )
    assert not result, f"CREATE INDEX ended before the crash: {result}"
    time.sleep(random.uniform(0.2, 1.0))
    db.server.crash()
    t.join(timeout=30)
    assert isinstance(result.get("error"), psycopg.OperationalError), (
        f"CREATE INDEX should have lost its connection, got {result}"
    )
    say(f"killed the server during CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}({building[0]})")
    say(f"restarted: {restart_after_crash(db)}")
    with db.connect() as conn:
        n = conn.execute("SELECT count(*) FROM big").fetchone()[0]
        assert n == BIG, f"big has {n} rows after recovery, not {BIG}"
        state = conn.execute(
            "SELECT i.indisvalid, i.indisready FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (index,)
        ).fetchone()
        if concurrently:
            assert state is not None and not state[0], (
                f"the interrupted CREATE INDEX CONCURRENTLY should leave an invalid index, found {state}"
            )
            conn.execute("SET enable_seqscan = off")
            explained = plan(conn, "SELECT id FROM big ORDER BY v <-> %s::vector LIMIT 5", (vec_text(np.zeros(DIM)),))
            assert index not in explained, f"a query uses the invalid index:\n{explained}"
            conn.execute(f"DROP INDEX {index}")
            say(f"after recovery: {n} rows, {index} left invalid, not used by queries, dropped")
        else:
            assert state is None, f"the interrupted CREATE INDEX left {index} behind: {state}"
            say(f"after recovery: {n} rows, {index} does not exist")
        checked(conn, "items_v")


def index_info(conn, index: str) -> dict:
    row = conn.execute(
        "SELECT nodes, deleted_nodes, free_slots, pages FROM omen_index_info(%s::regclass)", (index,)
    ).fetchone()
    return dict(zip(("nodes", "deleted", "free", "pages"), row, strict=True))


class VacTable:
    """`vac(id int, v vector(64))`, autovacuum off, no index but the omen one (the only index
    VACUUM visits, so 'vacuuming indexes' means the omen index's ambulkdelete): built on
    `rows` rows, VAC_DELETE of them deleted, a CHECKPOINT (recovery replays the VACUUM's WAL,
    not the build's)."""

    def __init__(self, db: Database, rng: np.random.Generator, rows: int):
        self.rng = rng
        vectors = rng.random((rows, VAC_DIM), dtype=np.float32)
        started = time.monotonic()
        with db.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS vac")
            conn.execute(f"CREATE TABLE vac (id int, v vector({VAC_DIM})) WITH (autovacuum_enabled = off)")
            load(conn, "vac", 0, vectors)
            conn.execute("CREATE INDEX vac_v ON vac USING omen (v vector_l2_ops)")
            built = time.monotonic() - started
            info = index_info(conn, "vac_v")
            assert info["nodes"] == rows and info["deleted"] == 0 and info["free"] == 0, (
                f"a fresh build on {rows} rows should have {rows} nodes, none deleted or free: {info}"
            )
            self.slots = rows  # nodes + deleted nodes + free slots, until inserts fill free slots
            self.pages = info["pages"]
            gone = [int(i) for i in rng.choice(rows, size=int(rows * VAC_DELETE), replace=False)]
            self.gone_tids = {r[0] for r in conn.execute("SELECT ctid::text FROM vac WHERE id = ANY(%s)", (gone,))}
            conn.execute("DELETE FROM vac WHERE id = ANY(%s)", (gone,))
            self.gone = {i: vec_text(vectors[i]) for i in gone}
            self.live = {r[0]: r[1] for r in conn.execute("SELECT id, v::text FROM vac")}
            # The rows whose nearest-neighbour probe must still succeed after the crash: a
            # random sample, each checked before the VACUUM. The search is approximate: in a
            # fresh build of 20,000 random 64-dimensional vectors a node or two per ten
            # thousand is not found by its own vector even at list size 100 (few in-edges,
            # all from far nodes), which is the build's recall, not the crash's doing.
            self.sample, self.unfound = [], []
            with probing(conn):
                for i in rng.permutation(sorted(self.live)):
                    if len(self.sample) == VAC_SAMPLE:
                        break
                    (self.sample if nearest(conn, self.live[int(i)]) == i else self.unfound).append(int(i))
            conn.execute("CHECKPOINT")
        say(
            f"vac: {rows} rows of {VAC_DIM} dimensions, omen index built in {built:.1f} s ({self.pages} pages); "
            f"{len(self.gone)} rows deleted; {VAC_SAMPLE} sample rows are their own nearest neighbour "
            f"(search_list_size {PROBE_LIST_SIZE}) before the VACUUM"
            f"{f' (skipped {len(self.unfound)} that were not: {self.unfound})' if self.unfound else ''}"
        )

    def verify(self, conn, label: str, strict: bool = True, probes: list[int] = ()) -> None:
        """omen_check; every index slot accounted for; full scans through the index return each
        live row once and no deleted row, and no deleted row is among the 10 nearest rows to
        a deleted row's vector; the sample rows (and `probes`) are their own nearest neighbour
        through the index: all of them when `strict`, else at least 95% (after VACUUM
        rewires the graph, a few may be missed at this list size without anything being
        lost: the full scans show every row is still there)."""
        nodes, _, rows = checked(conn, "vac_v")
        assert rows == len(self.live), f"omen_check counts {rows} table rows, expected {len(self.live)}"
        info = index_info(conn, "vac_v")
        assert info["nodes"] + info["deleted"] + info["free"] == self.slots, (
            f"{self.slots} index slots expected (nodes + deleted + free), omen_index_info says {info}"
        )
        ids = {r[0] for r in conn.execute("SELECT id FROM vac")}
        assert ids == self.live.keys(), f"the table holds {len(ids)} rows, expected {len(self.live)}"
        with probing(conn):
            # A list that can grow to every node of the index: the scan returns all it reaches.
            conn.execute(f"SET omen.max_search_list_size = {max(self.slots, 20000)}")
            for _ in range(3):
                q = vec_text(self.rng.random(VAC_DIM, dtype=np.float32))
                got = [r[0] for r in conn.execute(PROBE, (q, self.slots))]
                seen = set(got)
                assert len(got) == len(seen), (
                    f"a full scan through the index returned {len(got) - len(seen)} rows twice"
                )
                assert not seen & self.gone.keys(), (
                    f"a full scan through the index returned {len(seen & self.gone.keys())} deleted rows"
                )
                assert seen == self.live.keys(), (
                    f"a full scan through the index returned {len(seen)} of the {len(self.live)} rows"
                )
            conn.execute("RESET omen.max_search_list_size")
            near = [int(i) for i in self.rng.choice(sorted(self.gone), size=100, replace=False)]
            for i in near:
                got = {r[0] for r in conn.execute(PROBE, (self.gone[i], 10))}
                assert len(got) == 10 and not got & self.gone.keys(), (
                    f"the 10 nearest rows to deleted row {i}'s vector through the index: {sorted(got)}, "
                    f"deleted among them: {sorted(got & self.gone.keys())}"
                )
            probe = self.sample + list(probes)
            misses = [(i, got) for i in probe if (got := nearest(conn, self.live[i])) != i]
        if strict:
            assert not misses, (
                f"{len(misses)} of {len(probe)} rows are not their own nearest neighbour "
                f"through the index, e.g. (id, got) {misses[:10]}"
            )
        else:
            assert len(misses) <= len(probe) // 20, (
                f"{len(misses)} of {len(probe)} rows are not their own "
                f"nearest neighbour through the index: {misses[:20]}"
            )
        say(
            f"{label}: omen_check ok ({nodes} nodes, {rows} table rows); index: {info['nodes']} nodes, "
            f"{info['deleted']} deleted, {info['free']} free slots, {info['pages']} pages; 3 full scans return "
            f"each of the {len(self.live)} rows once and no deleted row (nor do the 10 nearest to {len(near)} "
            f"deleted rows' vectors); {len(probe) - len(misses)} of {len(probe)} rows are their own nearest "
            f"neighbour{f' (not: (id, got) {misses})' if misses else ''}"
        )


PROBE = "SELECT id FROM vac ORDER BY v <-> %s::vector LIMIT %s"
PROBE_LIST_SIZE = 100


@contextlib.contextmanager
def probing(conn):
    """Queries through the omen index (the plan is checked), at PROBE_LIST_SIZE."""
    conn.execute("SET enable_seqscan = off")
    conn.execute(f"SET omen.search_list_size = {PROBE_LIST_SIZE}")
    try:
        explained = plan(conn, PROBE, (vec_text(np.zeros(VAC_DIM)), 10))
        assert "vac_v" in explained, f"the probe query does not use the omen index:\n{explained}"
        yield
    finally:
        conn.execute("RESET enable_seqscan")
        conn.execute("RESET omen.search_list_size")


def nearest(conn, v: str):
    row = conn.execute(PROBE, (v, 1)).fetchone()
    return row and row[0]


def crash_during_vacuum(db: Database, table: VacTable) -> str:
    """Starts `VACUUM vac`, waits until it is in the index phase and has marked nodes deleted,
    lets it repair for a moment, and kills the server. Returns where the kill landed, judged
    after recovery: "middle" (nodes still marked deleted: the next VACUUM must finish them),
    "late" (the index pass had finished: free slots, nothing marked) or "early" (no mark
    reached the WAL)."""
    result: dict = {}

    def vacuum():
        try:
            with db.connect() as conn:
                conn.execute("VACUUM vac")
                result["done"] = True
        except BaseException as e:  # noqa: BLE001 -- the test's thread reports it
            result["error"] = e

    t = threading.Thread(target=vacuum, daemon=True)
    started = time.monotonic()
    t.start()
    with db.connect() as conn:

        def vacuum_phase():
            row = conn.execute("SELECT phase FROM pg_stat_progress_vacuum WHERE relid = 'vac'::regclass").fetchone()
            return row and row[0]

        def marking():
            if result:
                return "ended"
            return vacuum_phase() == "vacuuming indexes" and index_info(conn, "vac_v")["deleted"] > 0

        wait_for("VACUUM marking the index's nodes deleted", marking, timeout=120, interval=0.02)
        marked_at = time.monotonic() - started
        time.sleep(random.uniform(0.2, 1.5))  # into the repair
        last_phase, last = vacuum_phase(), index_info(conn, "vac_v")
    elapsed = time.monotonic() - started
    db.server.crash()
    t.join(timeout=30)
    if result.get("done"):
        say(f"VACUUM finished within {elapsed:.1f} s, before the kill")
    else:
        assert isinstance(result.get("error"), psycopg.OperationalError), (
            f"VACUUM should have lost its connection, got {result}"
        )
        say(
            f"killed the server {elapsed:.1f} s into VACUUM (nodes marked deleted from {marked_at:.2f} s; "
            f"just before the kill: phase '{last_phase}', {last['deleted']} nodes marked, {last['free']} free)"
        )
    say(f"restarted: {restart_after_crash(db)}")
    with db.connect() as conn:
        info = index_info(conn, "vac_v")
        if info["deleted"] > 0:
            where = "middle"
            say(
                f"the kill landed in the middle of the index VACUUM: {info['deleted']} nodes marked deleted "
                f"after recovery, {info['free']} free slots "
                f"({'in the sweep' if info['free'] else 'before the sweep'})"
            )
        elif info["free"] > 0:
            where = "late"
            say(f"the kill landed after the index VACUUM: nothing marked deleted, {info['free']} free slots")
        else:
            where = "early"
            say("the kill landed before any mark reached the WAL: nothing deleted or free in the index")
        # A VACUUM whose repair ran (finished, or cut off in the middle) has rewired part of
        # the graph: the probes may miss a few (see verify); the full scans still must not.
        table.verify(conn, "after recovery", strict=where == "early")
    return where


def crash_during_vacuum_then_finish(db: Database, rng: np.random.Generator) -> None:
    rows = VAC_ROWS
    table = VacTable(db, rng, rows)
    landed = []
    for attempt in range(1, VAC_ATTEMPTS + 1):
        landed.append(crash_during_vacuum(db, table))
        if landed[-1] == "middle" or attempt == VAC_ATTEMPTS:
            break
        if landed[-1] == "late":  # VACUUM was too quick: a bigger table
            rows *= 2
            say(f"attempt {attempt} landed {landed[-1]}: again with {rows} rows")
            table = VacTable(db, rng, rows)
        else:  # the same dead rows, VACUUMed again
            say(f"attempt {attempt} landed {landed[-1]}: again")
    assert landed[-1] == "middle", f"none of {VAC_ATTEMPTS} kills landed in the middle of the index VACUUM: {landed}"

    with db.connect() as conn:
        started = time.monotonic()
        conn.execute("VACUUM vac")
        took = time.monotonic() - started
        info = index_info(conn, "vac_v")
        say(f"VACUUM again ({took:.1f} s): {info}")
        assert info["deleted"] == 0, f"VACUUM after the crash left {info['deleted']} nodes marked deleted"
        assert info["nodes"] == len(table.live) and info["free"] == table.slots - len(table.live), (
            f"after VACUUM the index should have {len(table.live)} nodes and {table.slots - len(table.live)} free slots"
        )
        assert info["pages"] == table.pages, f"VACUUM changed the index size: {table.pages} -> {info['pages']} pages"
        table.verify(conn, "after VACUUM", strict=False)

        first = 10 * table.slots
        load(conn, "vac", first, rng.random((VAC_INSERT, VAC_DIM), dtype=np.float32))
        conn.execute("SELECT omen_flush('vac_v')")  # the insert buffer's entries into the graph
        new = {
            r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, v::text, ctid::text FROM vac WHERE id >= %s", (first,))
        }
        table.live.update({i: v for i, (v, _) in new.items()})
        reused = sum(1 for _, tid in new.values() if tid in table.gone_tids)
        after = index_info(conn, "vac_v")
        say(
            f"{VAC_INSERT} inserts ({reused} into heap TIDs of deleted rows): {info['free']} -> {after['free']} "
            f"free slots, {info['pages']} -> {after['pages']} pages"
        )
        assert after["free"] == info["free"] - VAC_INSERT and after["nodes"] == len(table.live), (
            f"the {VAC_INSERT} new nodes should take {VAC_INSERT} of the {info['free']} free slots: {after}"
        )
        assert after["pages"] <= info["pages"] + 3 + BUFFER_PAGES, (
            f"the inserts grew the index from {info['pages']} to {after['pages']} pages instead of filling "
            f"its {info['free']} free slots (the insert buffer may add {BUFFER_PAGES} pages)"
        )
        table.verify(conn, "after the inserts", strict=False, probes=sorted(new)[::5])


@pytest.fixture(scope="module")
def server(module_servers):
    """PostgreSQL 15 with fsync on, for the module's crashes."""
    s = module_servers.start("crash", "fsync=on")
    with s.connect() as conn:
        assert conn.execute("SHOW fsync").fetchone()[0] == "on", "fsync must be on"
    return s


def indexed_items(db: Database, rng) -> None:
    """items(id, v vector(16)): INITIAL random rows and the omen index items_v."""
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "items", 0, rng.random((INITIAL, DIM), dtype=np.float32))
        conn.execute("CREATE INDEX items_v ON items USING omen (v vector_l2_ops)")
        checked(conn, "items_v")


def test_crash_during_inserts(db):
    rng = np.random.default_rng(20261125)
    indexed_items(db, rng)
    say(f"{INITIAL} rows indexed, single-row INSERT transactions streaming")
    with phase("crash during the insert stream"):
        crash_during_inserts(db, 100_000, seed=1, checkpoint=False)
    with phase("crash during the insert stream, with a CHECKPOINT in it"):
        crash_during_inserts(db, 200_000, seed=2, checkpoint=True)
    with db.connect() as conn:
        for i in range(300):
            conn.execute(
                "INSERT INTO items (id, v) VALUES (%s, %s)", (300_000 + i, vec_text(rng.random(DIM, dtype=np.float32)))
            )
        nodes, _, rows = checked(conn, "items_v")
    say(f"300 more inserts after recovery: omen_check ok ({nodes} nodes, {rows} rows)")


def test_crash_during_create_index(db):
    rng = np.random.default_rng(20261126)
    indexed_items(db, rng)  # an index that must come through the crashes unharmed
    with phase(f"load big: {BIG} rows"), db.connect() as conn:
        conn.execute(f"CREATE TABLE big (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "big", 0, rng.random((BIG, DIM), dtype=np.float32))
        conn.execute("CHECKPOINT")
    with phase("crash during CREATE INDEX"):
        crash_during_build(db, "big_v", concurrently=False)
    with phase("crash during CREATE INDEX CONCURRENTLY"):
        crash_during_build(db, "big_v", concurrently=True)
    with db.connect() as conn:
        conn.execute("CREATE INDEX big_v ON big USING omen (v vector_l2_ops)")
        nodes, _, rows = checked(conn, "big_v")
    say(f"rebuilt big_v: omen_check ok ({nodes} nodes, {rows} rows)")


def test_crash_during_vacuum(db):
    rng = np.random.default_rng(20261127)
    say(f"VACUUM: {VAC_ROWS} rows of {VAC_DIM} dimensions, {VAC_DELETE:.0%} deleted")
    crash_during_vacuum_then_finish(db, rng)


def test_crash_while_vacuum_frees_slots(db):
    """A kill while VACUUM turns deleted nodes into free slots (its sweep's second pass) leaves
    no edge to a free slot: the first pass has dropped every edge to them. VACUUM runs
    throttled (`vacuum_cost_delay`, a sleep at each page) so that the kill lands there; the
    next VACUUM then finishes the job. (A single pass that freed each page's nodes as it went
    left edges from the pages it had not reached to free slots: omen_check failed.)"""
    rng = np.random.default_rng(20261201)
    table = VacTable(db, rng, 4000)
    result: dict = {}

    def vacuum():
        try:
            with db.connect() as conn:
                conn.execute("SET vacuum_cost_delay = '2ms'")
                conn.execute("SET vacuum_cost_limit = 1")
                conn.execute("VACUUM vac")
                result["done"] = True
        except BaseException as e:  # noqa: BLE001 -- the test's thread reports it
            result["error"] = e

    t = threading.Thread(target=vacuum, daemon=True)
    t.start()
    seen = []  # (seconds, deleted, free) of each poll

    def freeing(conn):
        if result:
            return True
        info = index_info(conn, "vac_v")
        seen.append((round(time.monotonic() - started, 2), info["deleted"], info["free"]))
        return info["free"] > 0

    started = time.monotonic()
    with db.connect() as conn:
        wait_for("VACUUM freeing slots", lambda: freeing(conn), timeout=300, interval=0.05)
        assert not result, f"VACUUM ended before any slot was freed: {result}; polls {seen}"
        # The frees so far reach the disk (a WAL switch flushes the WAL before it); the kill
        # then loses only what VACUUM logs after this.
        conn.execute("SELECT pg_switch_wal()")
        before = index_info(conn, "vac_v")
    db.server.crash()
    t.join(timeout=30)
    assert isinstance(result.get("error"), psycopg.OperationalError), (
        f"VACUUM should have lost its connection: {result}"
    )
    say(f"killed the server while VACUUM freed slots ({before}); restarted: {restart_after_crash(db)}")
    with db.connect() as conn:
        after = index_info(conn, "vac_v")
        assert after["free"] > 0 and after["deleted"] > 0, (
            f"the kill should land among the frees: {after}; polls {seen}"
        )
        table.verify(conn, "after recovery", strict=False)
        conn.execute("VACUUM vac")
        info = index_info(conn, "vac_v")
        assert info["deleted"] == 0 and info["nodes"] == len(table.live), f"VACUUM after the crash: {info}"
        table.verify(conn, "after VACUUM", strict=False)
