"""WAL replay of omen indexes on a physical hot standby (PostgreSQL 15).

A primary (wal_level=replica, max_wal_senders, pg_hba trusting local and 127.0.0.1
connections, replication included) gets an omen index built and then written to before
`pg_basebackup -R` copies it to a standby on another port, which starts as a hot standby
streaming from the primary over loopback. After the backup the primary writes every kind of
index WAL record while a client keeps querying the standby (the indexes' buffer_threshold
is out of reach, so merges happen exactly where the test asks for them, never in a
background worker while pages are compared):
- insert-buffer appends to the index that came with the backup (`items`), which VACUUM
  then merges into the graph (nodes written with their buffer entries in one record,
  back-edges, the segment's pages put on the free list), and later appends that reuse
  those pages;
- a new index built with log_newpage_range (`items2`), then inserted into, merged by
  omen_flush, then inserted into in place (`buffer = off`);
- an index built on an empty table on a column without typmod, whose first insert fixes the
  dimensions in the metapage (`items3`); its rows stay buffered, so the standby's scans
  read the buffer;
- deletes and VACUUM, which mark nodes deleted;
- an index built past `maintenance_work_mem` (`items4`, 1 MB): the rows past it are
  inserted one by one without WAL records and every page is logged at the end, so the
  build writes at most 1.2 times the index's size in WAL (one full image a page; the
  records of one insert at a time wrote 1.7 times as much on 6,000 rows).
Once the standby has replayed up to the primary's pg_current_wal_lsn(), for each of the
four indexes: omen_index_info is identical on both servers, omen_check is ok on the standby
(structure sound, every table row reachable), and 50 random queries (ORDER BY v <-> q
LIMIT 10, enable_seqscan = off, the omen index in the plan) return exactly the same ids in
the same order on the standby as on the primary. The queries run on the standby during
replay must all have succeeded with 10 rows each.
"""

import threading

import numpy as np
import psycopg

from pgcluster import Server, as_postgres, load, omen_check, phase, plan, say, vec_text, wait_for

NO_MERGE = "buffer_threshold = 100000000"
DIM = 16
QUERIES = 50
K = 10

HBA = """\
# omendb standby test: trust everything local and on loopback, replication included
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
"""


def insert_rows(conn, table: str, first_id: int, vectors: np.ndarray) -> None:
    """One INSERT per row: each goes through aminsert (GenericXLog)."""
    for i, v in enumerate(vectors):
        conn.execute(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", (first_id + i, vec_text(v)))


def knn(conn, table: str, index: str, queries: np.ndarray) -> list[list[int]]:
    conn.execute("SET enable_seqscan = off")
    sql = f"SELECT id FROM {table} ORDER BY v <-> %s::vector LIMIT {K}"
    explained = plan(conn, sql, (vec_text(queries[0]),))
    assert f"Index Scan using {index}" in explained, f"the query does not use {index}:\n{explained}"
    return [[r[0] for r in conn.execute(sql, (vec_text(q),))] for q in queries]


def info(conn, index: str) -> dict:
    """omen_index_info as a dict (nodes, deleted_nodes, pages, average_degree, entry_point, ...)."""
    return conn.execute("SELECT to_jsonb(i) FROM omen_index_info(%s::regclass) i", (index,)).fetchone()[0]


class StandbyReader:
    """Queries the standby in a loop while it replays."""

    def __init__(self, standby: Server, seed: int):
        self.standby = standby
        self.rng = np.random.default_rng(seed)
        self.queries = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.standby.connect() as conn:
                conn.execute("SET enable_seqscan = off")
                while not self.stop.is_set():
                    q = vec_text(self.rng.random(DIM, dtype=np.float32))
                    rows = conn.execute(f"SELECT id FROM items ORDER BY v <-> %s::vector LIMIT {K}", (q,)).fetchall()
                    assert len(rows) == K and len({r[0] for r in rows}) == K, f"a standby query returned {rows}"
                    self.queries += 1
        except BaseException as e:  # noqa: BLE001 -- the test's thread reports it
            self.error = e


def same_info(p, s, index: str) -> str:
    pi, si = info(p, index), info(s, index)
    assert pi == si, f"omen_index_info differs: primary {pi}, standby {si}"
    return (
        f"identical on both ({pi['nodes']} nodes, {pi['buffered_entries']} buffered, {pi['deleted_nodes']} deleted, "
        f"{pi['pages']} pages, entry {pi['entry_point']})"
    )


def same_pages(p, s, index: str) -> str:
    sql = (
        "SELECT b, md5(get_raw_page(%s, b::int)) FROM "
        "generate_series(0, pg_relation_size(%s::regclass) / 8192 - 1) b ORDER BY b"
    )
    pp, sp = p.execute(sql, (index, index)).fetchall(), s.execute(sql, (index, index)).fetchall()
    assert len(pp) == len(sp), f"{len(pp)} pages on the primary, {len(sp)} on the standby"
    differ = [b for (b, x), (_, y) in zip(pp, sp, strict=True) if x != y]
    assert not differ, f"{len(differ)} of {len(pp)} pages differ, e.g. blocks {differ[:10]}"
    return f"all {len(pp)} pages byte-identical on both"


def checked(conn, index: str) -> str:
    """omen_check on one server (the primary or the standby)."""
    c = omen_check(conn, index)
    return f"ok ({c['nodes']} nodes, {c['reachable']} reachable, {c['table_rows']} table rows)"


def same_neighbours(p, s, table: str, index: str, queries) -> str:
    want, got = knn(p, table, index, queries), knn(s, table, index, queries)
    assert all(len(r) == K for r in want), f"a query on {table} returned fewer than {K} rows"
    differ = [i for i in range(QUERIES) if want[i] != got[i]]
    assert not differ, (
        f"{len(differ)} of {QUERIES} queries differ, e.g. primary "
        f"{want[differ[0]] if differ else ''} standby {got[differ[0]] if differ else ''}"
    )
    return f"{QUERIES} queries return the same {K} ids, in the same order, on both"


def test_standby_replays_omen_wal(servers):
    rng = np.random.default_rng(424242)
    primary = servers.start(
        "primary",
        "wal_level=replica",
        "max_wal_senders=5",
        "hot_standby=on",
        "autovacuum=off",  # no concurrent ANALYZE holding back VACUUM
    )
    standby = servers.new("standby", "hot_standby=on")
    (primary.datadir / "pg_hba.conf").write_text(HBA)
    with primary.connect() as conn:
        conn.execute("SELECT pg_reload_conf()")
        assert conn.execute("SHOW wal_level").fetchone()[0] == "replica", "wal_level must be replica"
        conn.execute("CREATE EXTENSION omendb")
        conn.execute("CREATE EXTENSION pageinspect")  # get_raw_page, to compare the index pages
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "items", 0, rng.random((3000, DIM), dtype=np.float32))
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v vector_l2_ops) WITH ({NO_MERGE})")
        insert_rows(conn, "items", 3000, rng.random((300, DIM), dtype=np.float32))
    say("primary: items_v built on 3000 rows, 300 inserts; taking the base backup")

    with phase("pg_basebackup -R, start the standby"):
        backup = f"-h 127.0.0.1 -p {primary.port} -U postgres -D {standby.datadir} -R -X stream -c fast"
        as_postgres(str(primary.bindir / "pg_basebackup"), *backup.split())
        as_postgres("truncate", "-s", "0", str(standby.datadir / "server.log"))  # the primary's, copied
        standby.restart()
    with standby.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], "the standby is not in recovery"
    with primary.connect() as conn:
        sender = wait_for(
            "the standby to stream",
            lambda: conn.execute("SELECT state FROM pg_stat_replication WHERE state = 'streaming'").fetchone(),
        )
    say(f"standby on port {standby.port}: hot standby, replication {sender[0]}")

    reader = StandbyReader(standby, seed=7)
    reader.thread.start()
    with primary.connect() as conn:
        insert_rows(conn, "items", 10_000, rng.random((1500, DIM), dtype=np.float32))
        conn.execute(f"CREATE TABLE items2 (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "items2", 0, rng.random((3000, DIM), dtype=np.float32))
        conn.execute(f"CREATE INDEX items2_v ON items2 USING omen (v vector_l2_ops) WITH ({NO_MERGE})")
        insert_rows(conn, "items2", 10_000, rng.random((700, DIM), dtype=np.float32))
        merged = conn.execute("SELECT omen_flush('items2_v')").fetchone()[0]
        assert merged == 700, f"omen_flush merged {merged} entries of items2_v, expected 700"
        conn.execute("ALTER INDEX items2_v SET (buffer = off)")
        insert_rows(conn, "items2", 20_000, rng.random((100, DIM), dtype=np.float32))
        conn.execute("CREATE TABLE items3 (id int PRIMARY KEY, v vector)")
        conn.execute(f"CREATE INDEX items3_v ON items3 USING omen (v vector_l2_ops) WITH ({NO_MERGE})")
        insert_rows(conn, "items3", 0, rng.random((800, DIM), dtype=np.float32))
        i = info(conn, "items_v")
        before = i["nodes"] + i["buffered_entries"]
        deleted = conn.execute("DELETE FROM items WHERE id % 10 = 3").rowcount
        conn.execute("VACUUM items")
        i = info(conn, "items_v")
        assert i["nodes"] == before - deleted and i["buffered_entries"] == 0, (
            f"after deleting {deleted} of {before} rows and VACUUM, items_v has {i['nodes']} live nodes "
            f"and {i['buffered_entries']} buffered entries"
        )
        insert_rows(conn, "items", 20_000, rng.random((200, DIM), dtype=np.float32))
        conn.execute(f"CREATE TABLE items4 (id int PRIMARY KEY, v vector({DIM}))")
        load(conn, "items4", 0, rng.random((8000, DIM), dtype=np.float32))
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("SET maintenance_work_mem = '1MB'")
        before_build = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        conn.execute(f"CREATE INDEX items4_v ON items4 USING omen (v vector_l2_ops) WITH ({NO_MERGE})")
        wal, size = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s), pg_relation_size('items4_v')", (before_build,)
        ).fetchone()
        conn.execute("RESET maintenance_work_mem")
        assert any("inserted one by one" in n for n in notices), f"items4_v fit in 1 MB: {notices}"
        assert wal <= 1.2 * size, f"building items4_v past maintenance_work_mem wrote {wal} bytes of WAL, index {size}"
        insert_rows(conn, "items4", 10_000, rng.random((200, DIM), dtype=np.float32))
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    say(
        f"primary after the backup: 1700 buffered inserts, DELETE + VACUUM (merged; {deleted} nodes no "
        f"longer live) on items_v; items2_v built on 3000 rows + 700 buffered inserts, omen_flush, 100 in "
        f"place; items3_v built empty + 800 buffered inserts; items4_v built past maintenance_work_mem "
        f"({int(wal):,} bytes of WAL for {size:,} of index), 200 buffered inserts; WAL at {target}"
    )

    with standby.connect() as conn:
        wait_for(
            f"the standby to replay up to {target}",
            lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0],
            timeout=60,
        )
        replayed = conn.execute("SELECT pg_last_wal_replay_lsn()").fetchone()[0]
    reader.stop.set()
    reader.thread.join(timeout=30)
    assert reader.error is None, f"a query on the standby failed during replay: {reader.error!r}"
    assert reader.queries > 0, "no query ran on the standby during replay"
    say(f"standby replayed up to {replayed}; {reader.queries} queries ran on it during replay, all with {K} rows")

    # Every comparison runs and reports, then the test fails if any did.
    failures: list[str] = []

    def verify(what: str, step, *args) -> None:
        try:
            say(f"{what}: {step(*args)}")
        except (AssertionError, psycopg.Error) as e:
            failures.append(f"{what}: {type(e).__name__}: {e}".rstrip())
            say(f"{what}: FAILED: {type(e).__name__}: {e}".rstrip())

    queries = rng.random((QUERIES, DIM), dtype=np.float32)
    with primary.connect() as p, standby.connect() as s:
        for table in ("items", "items2", "items3", "items4"):
            index = f"{table}_v"
            verify(f"{index} omen_index_info", same_info, p, s, index)
            verify(f"{index} pages", same_pages, p, s, index)
            verify(f"{index} omen_check on the primary", checked, p, index)
            verify(f"{index} omen_check on the standby", checked, s, index)
            verify(f"{index} neighbours", same_neighbours, p, s, table, index, queries)
    assert not failures, f"{len(failures)} checks failed:\n" + "\n".join(failures)
