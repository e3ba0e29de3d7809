"""The insert buffer and its merges under crashes, DDL and a lack of workers (PostgreSQL 15),
and its pages added several at a time (PostgreSQL 18).

1. Crash during a merge: `items(id int primary key, v vector(64))`, an omen index built on
   2,000 random rows with a threshold no insert reaches, then 12,000 rows inserted, all
   buffered. `omen_flush` merges them from one connection (a large batch, so it is slow)
   while another watches the graph grow; once a third of them are in the graph the server
   is killed (`pg_ctl stop -m immediate`) and restarted. Then the remaining buffer must be
   non-empty (the kill landed in the merge), omen_check is ok (every row reachable, no row
   indexed twice), a full scan through the index returns every row exactly once, and every
   row of a 300-row sample is its own nearest neighbour. `omen_flush` then merges the rest:
   nothing buffered, a node per row, the same checks.
2. No worker can start (`max_worker_processes = 0`, threshold 50, `omen.insert_buffer_cap`
   = 500): 4,000 inserts all succeed; the log says a worker could not be started and that
   inserts merged batches themselves; the buffer never holds more than the cap plus a page
   (sampled after every 100 inserts); every row is found through the index; autovacuum,
   which cannot start a worker either, then merges the rest by itself.
3. DDL while the background worker merges a 12,000-entry buffer: DROP INDEX, REINDEX,
   TRUNCATE and DROP DATABASE ... WITH (FORCE) each finish within 60 s (statement_timeout),
   and the worker is gone from pg_stat_activity within 30 s after. For REINDEX and TRUNCATE
   the index is usable afterwards and omen_check is ok.
4. omendb in shared_preload_libraries: one `omen merge launcher` process runs (seen in
   pg_stat_activity), and it serves two databases: buffered inserts into an index in each
   (threshold 10) are merged by workers it starts, until nothing is buffered, and
   omen_check is ok in both.
5. PostgreSQL 18, where a growing buffer adds up to 16 pages with one file extension and
   puts the ones it does not need yet on its free list: 3,000 buffered 512-d rows (three to
   a page). Every page the index gained is a buffer page or on the free list, at most 15 of
   them; omen_check, a full scan and a nearest-neighbour sample find every row; after
   `omen_flush`, 1,000 more rows are buffered on released pages without the index growing
   (and at least 290 of 300 sampled rows are their own nearest neighbour: uniform random
   512-d rows are all about equally far apart, the hardest case for a graph).
"""

import threading
import time

import numpy as np
import psycopg
import pytest

from pgcluster import load, omen_check, phase, say, vec_text, wait_for

DIM = 64
INITIAL = 2000
BUFFERED = 12000
SAMPLE = 300
NO_MERGE = "buffer_threshold = 100000000"


def info(conn, index: str = "items_v") -> dict:
    cur = conn.execute("SELECT * FROM omen_index_info(%s::regclass)", (index,))
    return dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))


def check_index(conn, rows: dict[int, np.ndarray], rng, what: str, min_found: int = SAMPLE) -> tuple[int, int]:
    """omen_check, a full scan through the index and a nearest-neighbour sample (at least
    `min_found` of SAMPLE rows their own nearest neighbour)."""
    c = omen_check(conn, "items_v", what)
    nodes, buffered = c["nodes"], c["buffered"]
    assert nodes + buffered == len(rows), f"{what}: {nodes} nodes + {buffered} buffered for {len(rows)} rows"
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET omen.max_search_list_size = 1000000")
    conn.execute("SET omen.search_list_size = 100")
    ids = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM items ORDER BY v <-> %s::vector LIMIT {len(rows) + 10}",
            (vec_text(np.zeros(len(rows[0]))),),
        )
    ]
    assert len(ids) == len(set(ids)) == len(rows), (
        f"{what}: a full scan returned {len(ids)} rows ({len(set(ids))} distinct) of {len(rows)}"
    )
    sample = rng.choice(sorted(rows), size=SAMPLE, replace=False)
    found = sum(
        conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (vec_text(rows[int(i)]),)).fetchone()[0]
        == int(i)
        for i in sample
    )
    assert found >= min_found, f"{what}: only {found} of {SAMPLE} rows are their own nearest neighbour"
    say(
        f"{what}: omen_check ok ({nodes} nodes, {buffered} buffered), full scan returns each of "
        f"{len(rows)} rows once, {found}/{SAMPLE} rows their own nearest neighbour"
    )
    return nodes, buffered


def test_crash_during_merge(servers):
    rng = np.random.default_rng(4242)
    server = servers.start("buffer-crash", "fsync=on")
    vectors = rng.random((INITIAL + BUFFERED, DIM), dtype=np.float32)
    rows = {i: vectors[i] for i in range(len(vectors))}
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
        load(conn, "items", INITIAL, vectors[INITIAL:])
        before = info(conn)
        assert before["buffered_entries"] == BUFFERED and before["nodes"] == INITIAL, (
            f"expected {BUFFERED} buffered entries before the merge: {before}"
        )

    flush_error: list = []

    def flush() -> None:
        try:
            with server.connect() as c:
                c.execute("SELECT omen_flush('items_v')")
        except psycopg.Error as e:
            flush_error.append(e)

    flusher = threading.Thread(target=flush)
    flusher.start()
    with phase(f"omen_flush of {BUFFERED} entries until a third are in the graph"), server.connect() as conn:
        wait_for(
            "a third of the buffer merged",
            lambda: info(conn)["nodes"] >= INITIAL + BUFFERED // 3,
            timeout=300,
            interval=0.2,
        )
    server.crash()
    flusher.join()
    assert bool(flush_error), "omen_flush finished before the crash"
    server.restart()
    with server.connect() as conn:
        after = info(conn)
        assert 0 < after["buffered_entries"] < BUFFERED, (
            f"the kill did not land in the merge: {after['buffered_entries']} entries still buffered"
        )
        say(f"killed mid-merge: {after['nodes']} nodes, {after['buffered_entries']} entries still buffered")
        check_index(conn, rows, rng, "after recovery")
        merged = conn.execute("SELECT omen_flush('items_v')").fetchone()[0]
        nodes, buffered = check_index(conn, rows, rng, f"after omen_flush merged {merged} more")
        assert buffered == 0 and nodes == len(rows), f"after omen_flush: {nodes} nodes, {buffered} buffered"


def test_no_workers(servers):
    """No worker can start (max_worker_processes = 0)."""
    rng = np.random.default_rng(4243)
    server = servers.start("buffer-noworker", "max_worker_processes=0", "autovacuum_naptime=1")
    cap, total = 500, 4000
    vectors = rng.random((INITIAL + total, DIM), dtype=np.float32)
    rows = {i: vectors[i] for i in range(INITIAL)}
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute("CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 50)")
        conn.execute(f"SET omen.insert_buffer_cap = {cap}")
        per_page = None
        largest = 0
        log_start = server.log_size()
        say(f"{total} single-row inserts, the buffer sampled every 100")
        for n in range(total):
            i = INITIAL + n
            conn.execute("INSERT INTO items VALUES (%s, %s)", (i, vec_text(vectors[i])))
            rows[i] = vectors[i]
            if n % 100 == 99:
                now = info(conn)
                largest = max(largest, now["buffered_entries"])
                if per_page is None and now["buffer_pages"]:
                    per_page = -(-now["buffered_entries"] // now["buffer_pages"])
        log = server.log_since(log_start)
        assert "could not start a merge worker" in log, "the log does not say a worker could not be started"
        assert "past omen.insert_buffer_cap" in log, "the log does not say inserts merged batches themselves"
        bound = cap + (per_page or 0)
        assert largest <= bound, f"the buffer held {largest} entries, more than the cap {cap} plus a page"
        say(
            f"{total} inserts succeeded; the buffer held at most {largest} entries (cap {cap}); "
            f"the log names the missing worker and the inserts' own merges"
        )
        check_index(conn, rows, rng, "with merges done by inserts")
        # Autovacuum cannot start a worker either, so it merges the buffer itself.
        conn.execute(
            "ALTER TABLE items SET (autovacuum_enabled = on, autovacuum_vacuum_insert_threshold = 1, "
            "autovacuum_vacuum_insert_scale_factor = 0)"
        )
        wait_for(
            "autovacuum to merge the buffer", lambda: info(conn)["buffered_entries"] == 0, timeout=180, interval=0.5
        )
        _, buffered = check_index(conn, rows, rng, "after autovacuum")
        assert buffered == 0, f"autovacuum left {buffered} entries buffered"


def merge_worker_running(conn) -> bool:
    return (
        conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'omen merge worker'").fetchone()[0] > 0
    )


def test_ddl_during_merge(servers):
    """DDL while the background worker merges."""
    rng = np.random.default_rng(4244)
    server = servers.start("buffer-ddl")
    vectors = rng.random((INITIAL + BUFFERED, DIM), dtype=np.float32)
    statements = {
        "DROP INDEX": "DROP INDEX items_v",
        "REINDEX": "REINDEX INDEX items_v",
        "TRUNCATE": "TRUNCATE items",
        "DROP DATABASE": None,
    }
    with server.connect() as admin:
        for what, sql in statements.items():
            say(f"{what}: {INITIAL} rows indexed, {BUFFERED} buffered, a merge worker started")
            admin.execute("DROP DATABASE IF EXISTS ddl")
            admin.execute("CREATE DATABASE ddl")
            with server.connect("ddl") as conn:
                conn.execute("CREATE EXTENSION omendb")
                conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}))")
                load(conn, "items", 0, vectors[:INITIAL])
                conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
                load(conn, "items", INITIAL, vectors[INITIAL:])
                # A low threshold: the next insert that fills a page starts the worker.
                conn.execute("ALTER INDEX items_v SET (buffer_threshold = 10)")
                i = INITIAL + BUFFERED
                while not merge_worker_running(admin):
                    conn.execute("INSERT INTO items VALUES (%s, %s)", (i, vec_text(vectors[i % len(vectors)])))
                    i += 1
                    assert i < INITIAL + BUFFERED + 5000, "no merge worker started"
                wait_for("the worker to merge", lambda c=conn: info(c)["nodes"] > INITIAL, timeout=60)
                started = time.monotonic()
                if sql is not None:
                    conn.execute("SET statement_timeout = '60s'")
                    conn.execute(sql)
            if sql is None:
                admin.execute("SET statement_timeout = '60s'")
                admin.execute("DROP DATABASE ddl WITH (FORCE)")
                admin.execute("RESET statement_timeout")
            took = time.monotonic() - started
            wait_for("the merge worker to exit", lambda: not merge_worker_running(admin), timeout=30)
            say(f"{what} during a merge finished in {took:.1f} s; the worker exited")
            if what in ("REINDEX", "TRUNCATE"):
                with server.connect("ddl") as conn:
                    omen_check(conn, "items_v", f"after {what}")
                    conn.execute("SET enable_seqscan = off")
                    conn.execute("INSERT INTO items VALUES (-1, %s)", (vec_text(np.full(DIM, 9.0)),))
                    top = conn.execute(
                        "SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (vec_text(np.full(DIM, 9.0)),)
                    ).fetchone()[0]
                    assert top == -1, f"after {what} the index does not find a new row"
        admin.execute("DROP DATABASE IF EXISTS ddl WITH (FORCE)")


def test_preloaded_launcher(servers):
    """omendb preloaded: one launcher serves every database."""
    rng = np.random.default_rng(4245)
    server = servers.start("buffer-preload", "shared_preload_libraries=omendb")
    vectors = rng.random((INITIAL + 3000, DIM), dtype=np.float32)
    with server.connect() as admin:
        wait_for(
            "the launcher to start",
            lambda: (
                admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'omen merge launcher'"
                ).fetchone()[0]
                == 1
            ),
            timeout=30,
        )
        for db in ("one", "two"):
            admin.execute(f"CREATE DATABASE {db}")
            with server.connect(db) as conn:
                conn.execute("CREATE EXTENSION omendb")
                conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM}))")
                load(conn, "items", 0, vectors[:INITIAL])
                conn.execute("CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 10)")
                for i in range(INITIAL, INITIAL + 3000):
                    conn.execute("INSERT INTO items VALUES (%s, %s)", (i, vec_text(vectors[i])))
        for db in ("one", "two"):
            with server.connect(db) as conn:
                # Nothing buffered, and the last segment released (its merge counted).
                wait_for(
                    f"database {db}'s buffer to be merged",
                    lambda c=conn: info(c)["buffer_pages"] == 0,
                    timeout=120,
                    interval=0.2,
                )
                merged = info(conn)["merged_entries"]
                ok, nodes, problems = conn.execute("SELECT ok, nodes, problems FROM omen_check('items_v')").fetchone()
                assert ok and nodes == INITIAL + 3000 and merged > 0, (
                    f"database {db}: ok={ok} nodes={nodes} merged={merged} problems={problems}"
                )
                say(f"database {db}: the launcher's workers merged {merged} entries; omen_check ok, {nodes} nodes")
        launchers = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'omen merge launcher'"
        ).fetchone()[0]
        assert launchers == 1, f"{launchers} launchers run, expected one"


@pytest.mark.pg18
def test_buffer_adds_pages_several_at_a_time(pg18_server):
    rng = np.random.default_rng(4244)
    dim, buffered, more = 512, 3000, 1000
    vectors = rng.random((INITIAL + buffered + more, dim), dtype=np.float32)
    rows = {i: vectors[i] for i in range(INITIAL + buffered)}
    db = pg18_server.create_db("omen_buffer_extension")
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({dim})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
        built = info(conn)["pages"]
        load(conn, "items", INITIAL, vectors[INITIAL : INITIAL + buffered])
        now = info(conn)
        assert now["buffered_entries"] == buffered, f"expected {buffered} buffered entries: {now}"
        spare = now["pages"] - built - now["buffer_pages"]
        assert 0 <= spare <= 15, (
            f"the index grew by {now['pages'] - built} pages for {now['buffer_pages']} buffer pages: "
            f"{spare} more than the free list of one extension can hold"
        )
        say(f"{buffered} buffered rows on {now['buffer_pages']} pages, {spare} more on the free list")
        check_index(conn, rows, rng, f"{buffered} buffered {dim}-d rows")
        conn.execute("SELECT omen_flush('items_v')")
        flushed = info(conn)
        assert flushed["buffered_entries"] == 0, f"omen_flush left entries buffered: {flushed}"
        load(conn, "items", INITIAL + buffered, vectors[INITIAL + buffered :])
        rows.update({i: vectors[i] for i in range(INITIAL + buffered, len(vectors))})
        after = info(conn)
        assert after["buffered_entries"] == more and after["pages"] == flushed["pages"], (
            f"{more} rows buffered after omen_flush grew the index from {flushed['pages']} to "
            f"{after['pages']} pages (the released buffer pages should hold them): {after}"
        )
        check_index(conn, rows, rng, f"{more} more rows buffered on released pages", min_found=SAMPLE - 10)
