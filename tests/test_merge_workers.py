"""Several merge workers on one index, a crash while two merge, and a large buffer's order
(PostgreSQL 15).

1. Two workers (`omen.max_merge_workers = 2`): `items(id int primary key, v vector(64))`,
   an omen index built on 2,000 random rows (threshold 50), then 12,000 rows inserted in
   chunks over a few seconds while another connection runs LIMIT 10 queries (each must
   return 10 rows). Two `omen merge worker` processes must be seen merging at once
   (pg_stat_activity); once nothing is buffered, omen_check is ok with one node per row, a
   full scan through the index returns every row once, every row of a sample is its own
   nearest neighbour, and recall@10 of 50 queries against exact top-10 is within 5 points
   of the same index rebuilt by REINDEX. The workers run at `omen.merge_worker_nice` (10,
   the default): their nice value, read from /proc while they merge, is 10, and so is
   their autogroup's (/proc/PID/autogroup, on kernels built with autogroup scheduling).
2. A crash while two workers merge: the same rows, all 12,000 buffered first (a threshold no
   insert reaches); the threshold is then lowered and two inserts of 100 rows, a second
   apart, start two workers. When both run and a third of the buffer is in the graph, the
   server is killed (`pg_ctl stop -m immediate`) and restarted: omen_check is ok, nodes
   plus buffered entries are the rows (none lost, none indexed twice), a full scan returns
   each row once, and at least 297 of 300 sampled rows are their own nearest neighbour (as
   in 1.); `omen_flush` then merges the rest to one node per row.
3. A 20,000-entry buffer (nothing merged): 300 inserted rows are each their own nearest
   neighbour, and for 50 queries the LIMIT 20 rows through the index are exactly the exact
   top 20 over buffered and graph rows alike, in non-decreasing distance as recomputed in
   SQL.
4. The default `omen.max_merge_workers` (-1): 30,000 rows COPYed into a 2,000-row indexed
   table (threshold 50). omen_index_info_json's "merge_workers" and "merge_workers_quiet"
   say those two counts. While the COPY runs, merge workers hold at most as many worker
   tokens at once (pg_locks, polled) as the cores less one (at most 2); once it is done,
   a worker that sees no buffer page filled for a second starts a helper, and as many
   hold tokens at once as there are cores (at most 2). Then the index checks out with one
   node per row.
"""

import itertools
import os
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from test_insert_buffer import BUFFERED, DIM, INITIAL, NO_MERGE, SAMPLE, check_index, info

from pgcluster import exact_topk, load, phase, say, vec_text, wait_for

# Rows of each of the inserts that start workers: more than two buffer pages of 64-d entries.
EXTRA = 100
WORKERS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'omen merge worker'"
WORKER_PIDS = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'omen merge worker'"
# Worker tokens are page locks on pseudo pages of the index (src/storage/merge_lock.rs):
# token k is block 2^32 - 2 - 8 - k, which pg_locks shows as a negative int4.
TOKEN_HOLDERS = (
    "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'page' AND granted"
    " AND relation = 'items_v'::regclass AND page BETWEEN -17 AND -10"
)


def server_cores() -> int:
    """The cores the server may use as Rust's `available_parallelism` counts them (what
    `omen.max_merge_workers = -1` goes by): this process's CPU affinity, bounded by its
    cgroup's CPU quota (cgroup v2 `cpu.max`; the server runs in the same cgroup)."""
    cores = len(os.sched_getaffinity(0))
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        quota, period = Path(f"/sys/fs/cgroup{group}/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(int(quota) // int(period), 1))
    except (OSError, IndexError, ValueError):
        pass  # no cgroup v2 quota: the affinity alone
    return cores


def wait_merged(conn) -> None:
    """Waits until nothing is buffered and the merge workers are gone (the last one repairs
    reachability before it exits)."""
    wait_for("the buffer to be merged", lambda: info(conn)["buffered_entries"] == 0, timeout=300, interval=0.2)
    wait_for("the workers to exit", lambda: conn.execute(WORKERS).fetchone()[0] == 0, timeout=120)


def nice_of(pid: int) -> int | None:
    """The nice value of process `pid` (field 19 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[16])


def autogroup_nice_of(pid: int) -> int | None:
    """The nice value of process `pid`'s autogroup ("/autogroup-N nice K" in
    /proc/PID/autogroup), None if it is gone or the kernel has no autogroup scheduling."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except OSError:
        return None


def recall_at_10(conn, vectors, queries) -> float:
    truth = exact_topk(vectors, queries, 10)
    hits = 0
    for q, t in zip(queries, truth, strict=True):
        got = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 10", (vec_text(q),))]
        hits += len(set(got) & set(t))
    return hits / (10 * len(queries))


def test_two_workers_merge_side_by_side(servers):
    rng = np.random.default_rng(5151)
    server = servers.start("merge-workers", "omen.max_merge_workers=2", "max_worker_processes=16")
    vectors = rng.random((INITIAL + BUFFERED, DIM), dtype=np.float32)
    rows = {i: vectors[i] for i in range(len(vectors))}
    queries = rng.random((50, DIM), dtype=np.float32)
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute("CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 50)")

    stop = threading.Event()
    seen = {"workers": 0, "queries": 0}
    nice_values: set[int] = set()
    autogroup_nice: set[int] = set()
    errors: list = []

    def watch_and_query() -> None:
        try:
            with server.connect() as c:
                c.execute("SET enable_seqscan = off")
                while not stop.is_set():
                    pids = [r[0] for r in c.execute(WORKER_PIDS)]
                    seen["workers"] = max(seen["workers"], len(pids))
                    nice_values.update(n for n in map(nice_of, pids) if n is not None)
                    autogroup_nice.update(n for n in map(autogroup_nice_of, pids) if n is not None)
                    q = vec_text(queries[seen["queries"] % len(queries)])
                    got = c.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 10", (q,)).fetchall()
                    assert len(got) == 10, f"a query during the merge returned {len(got)} rows"
                    seen["queries"] += 1
        except (psycopg.Error, AssertionError) as e:  # reported by the main thread
            errors.append(e)

    watcher = threading.Thread(target=watch_and_query)
    watcher.start()
    try:
        with phase(f"{BUFFERED} rows inserted in chunks, merged by two workers"), server.connect() as conn:
            for start in range(INITIAL, INITIAL + BUFFERED, 1000):
                load(conn, "items", start, vectors[start : start + 1000])
                time.sleep(0.3)
            wait_merged(conn)
    finally:
        stop.set()
        watcher.join()
    assert not errors, f"the querying connection failed: {errors[0]!r}"
    say(f"{seen['queries']} queries ran during the merge; at most {seen['workers']} merge workers at once")
    assert seen["workers"] >= 2, f"at most {seen['workers']} merge worker(s) ran at once, expected 2"
    # A worker shows in pg_stat_activity a moment before it lowers its priority: 0 may be
    # seen then, never anything else.
    assert 10 in nice_values and nice_values <= {0, 10}, f"merge workers ran at nice {sorted(nice_values)}"
    # Every PostgreSQL child is a session, so an autogroup, of its own: the worker's nice
    # value weighs against the backends only through its autogroup's.
    if Path("/proc/self/autogroup").exists():
        seen_nice = sorted(autogroup_nice)
        assert 10 in autogroup_nice and autogroup_nice <= {0, 10}, f"merge workers' autogroups at nice {seen_nice}"
    with server.connect() as conn:
        # Two merges prune the same lists side by side (an edge can be lost, never left
        # dangling): on uniformly random 64-d rows a sampled row or two may be missed by a
        # search of list size 100, though every row is reachable (omen_check).
        nodes, buffered = check_index(conn, rows, rng, "after two workers merged", min_found=SAMPLE - 3)
        assert nodes == len(rows) and buffered == 0, f"{nodes} nodes, {buffered} buffered for {len(rows)} rows"
        conn.execute("RESET omen.search_list_size")
        merged = recall_at_10(conn, vectors, queries)
        conn.execute("REINDEX INDEX items_v")
        fresh = recall_at_10(conn, vectors, queries)
        say(f"recall@10 of 50 queries: {merged:.3f} after the merges, {fresh:.3f} after REINDEX")
        assert merged >= fresh - 0.05, f"recall@10 {merged:.3f} after the merges, {fresh:.3f} built fresh"


def test_crash_while_two_workers_merge(servers):
    rng = np.random.default_rng(5152)
    server = servers.start("merge-workers-crash", "fsync=on", "omen.max_merge_workers=2", "max_worker_processes=16")
    vectors = rng.random((INITIAL + BUFFERED + 2 * EXTRA, DIM), dtype=np.float32)
    rows = {i: vectors[i] for i in range(INITIAL + BUFFERED)}
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
        load(conn, "items", INITIAL, vectors[INITIAL : INITIAL + BUFFERED])
        assert info(conn)["buffered_entries"] == BUFFERED
        conn.execute("ALTER INDEX items_v SET (buffer_threshold = 1)")
        most = 0
        with phase("two workers started by two inserts a second apart"):
            for first in (INITIAL + BUFFERED, INITIAL + BUFFERED + EXTRA):
                # Enough rows to add buffer pages: an insert that adds one requests a merge.
                load(conn, "items", first, vectors[first : first + EXTRA])
                rows.update((i, vectors[i]) for i in range(first, first + EXTRA))
                time.sleep(1.2)

            def two_running() -> bool:
                nonlocal most
                most = max(most, conn.execute(WORKERS).fetchone()[0])
                return most >= 2 and info(conn)["nodes"] >= INITIAL + BUFFERED // 3

            wait_for("two workers and a third of the buffer merged", two_running, timeout=300, interval=0.05)
    server.crash()
    server.restart()
    with server.connect() as conn:
        after = info(conn)
        say(f"killed while two workers merged: {after['nodes']} nodes, {after['buffered_entries']} buffered")
        assert after["buffered_entries"] > 0, "the kill did not land in the merge"
        # Two workers pruned side by side before the kill: as in the first test, a sampled
        # row or two may be missed by a search of list size 100 (every row is reachable:
        # omen_check; every row is returned once: the full scan).
        check_index(conn, rows, rng, "after recovery", min_found=SAMPLE - 3)
        conn.execute("SELECT omen_flush('items_v')")
        nodes, buffered = check_index(conn, rows, rng, "after omen_flush", min_found=SAMPLE - 3)
        assert nodes == len(rows) and buffered == 0, f"{nodes} nodes, {buffered} buffered for {len(rows)} rows"


# 64 dimensions: multi-bit codes, estimated one by one; 384: 1-bit codes, whose cached
# pages the scan estimates with FastScan (`storage/buffer_codes.rs`).
@pytest.mark.parametrize("dim,n_buffered", [(DIM, 20_000), (384, 6_000)])
def test_large_buffer_exact_order(server, dim, n_buffered):
    rng = np.random.default_rng(5153)
    if dim == DIM:
        vectors = rng.random((INITIAL + n_buffered, dim), dtype=np.float32)
        queries = rng.random((50, dim), dtype=np.float32)
    else:
        # Clustered, as embeddings are: uniform rows in 384 dimensions are all about equally
        # far apart, and 1-bit codes cannot order them (recall@10 0.77 with or without
        # FastScan).
        centers = rng.normal(size=(40, dim)).astype(np.float32)
        label = rng.integers(0, 40, size=INITIAL + n_buffered + 50)
        rows = centers[label] + 0.5 * rng.normal(size=(len(label), dim)).astype(np.float32)
        vectors, queries = rows[: INITIAL + n_buffered], rows[INITIAL + n_buffered :]
    with server.connect() as admin:
        admin.execute("DROP DATABASE IF EXISTS big_buffer")
        admin.execute("CREATE DATABASE big_buffer")
    with server.connect("big_buffer") as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({dim})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
        with phase(f"{n_buffered} rows of {dim} dimensions into the buffer"):
            load(conn, "items", INITIAL, vectors[INITIAL:])
        assert info(conn)["buffered_entries"] == n_buffered
        conn.execute("SET enable_seqscan = off")
        # A list as large as the graph: its 2,000 rows are searched (nearly) exhaustively,
        # so the comparison with the exact top 20 tests the buffer's part of the scan.
        conn.execute("SET omen.search_list_size = 2000")
        sample = rng.choice(np.arange(INITIAL, INITIAL + n_buffered), size=300, replace=False)
        for i in sample:
            got = conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (vec_text(vectors[i]),))
            assert got.fetchone()[0] == i, f"buffered row {i} is not its own nearest neighbour"
        truth = exact_topk(vectors, queries, 20)
        for q, t in zip(queries, truth, strict=True):
            got = conn.execute(
                "SELECT id, v <-> %s::vector FROM items ORDER BY v <-> %s::vector LIMIT 20", (vec_text(q), vec_text(q))
            ).fetchall()
            ids, dists = [r[0] for r in got], [r[1] for r in got]
            assert all(a <= b for a, b in itertools.pairwise(dists)), f"not in exact order: {dists}"
            assert set(ids) == set(t), f"rows {sorted(set(t) - set(ids))} of the exact top 20 are missing"
        say(f"{n_buffered} buffered rows: 300 their own nearest neighbour; 50 queries get the exact top 20 in order")
        # At the default list size the scan ranks exactly only the buffered rows whose codes
        # estimate them closest (2 x the list size): still its own nearest neighbour, still
        # in exact order, and recall@10 close to the graph's.
        conn.execute("RESET omen.search_list_size")
        for i in sample[:100]:
            got = conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1", (vec_text(vectors[i]),))
            assert got.fetchone()[0] == i, f"buffered row {i} is not its own nearest neighbour (default list)"
        hits = 0
        for q, t in zip(queries, exact_topk(vectors, queries, 10), strict=True):
            got = conn.execute(
                "SELECT id, v <-> %s::vector FROM items ORDER BY v <-> %s::vector LIMIT 10", (vec_text(q), vec_text(q))
            ).fetchall()
            dists = [r[1] for r in got]
            assert all(a <= b for a, b in itertools.pairwise(dists)), f"not in exact order: {dists}"
            hits += len({r[0] for r in got} & set(t))
        recall = hits / (10 * len(queries))
        say(f"default list size, {n_buffered} buffered rows: recall@10 {recall:.3f}")
        assert recall >= 0.9, f"recall@10 {recall:.3f} with {n_buffered} buffered rows at the default list size"


def test_default_workers_leave_a_core_while_rows_arrive(servers):
    rng = np.random.default_rng(5154)
    cores = server_cores()
    busy_workers, quiet_workers = min(max(cores - 1, 1), 2), min(cores, 2)
    server = servers.start("merge-workers-default", "max_worker_processes=16")
    rows = 30_000
    vectors = rng.random((INITIAL + rows, DIM), dtype=np.float32)
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION omendb")
        assert conn.execute("SHOW omen.max_merge_workers").fetchone()[0] == "-1"
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({DIM})) WITH (autovacuum_enabled = off)")
        load(conn, "items", 0, vectors[:INITIAL])
        conn.execute("CREATE INDEX items_v ON items USING omen (v) WITH (buffer_threshold = 50)")
        said = conn.execute("SELECT omen_index_info_json('items_v')::text::json").fetchone()[0]
        assert (said["merge_workers"], said["merge_workers_quiet"]) == (busy_workers, quiet_workers), (
            f"omen_index_info_json says {said['merge_workers']} / {said['merge_workers_quiet']} workers "
            f"on {cores} cores, expected {busy_workers} / {quiet_workers}"
        )

    copying = threading.Event()
    stop = threading.Event()
    most = {"copying": 0, "after": 0}
    errors: list = []

    def watch() -> None:
        try:
            with server.connect() as c:
                while not stop.is_set():
                    during = copying.is_set()
                    holders = c.execute(TOKEN_HOLDERS).fetchone()[0]
                    key = "copying" if during and copying.is_set() else "after"
                    most[key] = max(most[key], holders)
                    time.sleep(0.005)
        except psycopg.Error as e:  # reported by the main thread
            errors.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with phase(f"{rows} rows COPYed, merged by the default workers ({cores} cores)"), server.connect() as conn:
            copying.set()
            load(conn, "items", INITIAL, vectors[INITIAL:])
            copying.clear()
            wait_merged(conn)
    finally:
        stop.set()
        watcher.join()
    assert not errors, f"the watching connection failed: {errors[0]!r}"
    say(f"worker tokens held at once: at most {most['copying']} during the COPY, {most['after']} after it")
    assert 1 <= most["copying"] <= busy_workers, f"{most['copying']} workers merged at once during the COPY"
    assert most["after"] == quiet_workers, f"{most['after']} workers merged at once after the COPY"
    with server.connect() as conn:
        nodes, buffered = check_index(
            conn, {i: vectors[i] for i in range(len(vectors))}, rng, "after the default workers", min_found=SAMPLE - 3
        )
        assert nodes == len(vectors) and buffered == 0, f"{nodes} nodes, {buffered} buffered for {len(vectors)} rows"
