"""Sustained ingest: how fast the insert buffer is merged, and what queries pay meanwhile.

One PostgreSQL 18 server (bench/run.sh DATA --ingest starts it). A staging table holds the
rows (bench/inserts.py's: the base vectors, then the same with 1% seeded noise). Four
measurements, each on a fresh table:

1. Merge throughput of one backend: `--initial` rows and their index, then `--merge-rows`
   rows buffered at once (INSERT … SELECT, a threshold no insert reaches) and merged by
   `omen_flush`: entries/s.
2. Merge throughput of the background worker: the same rows buffered with the default
   threshold; the time from the INSERT's commit until the buffer is empty.
3. Queries while rows stream in: `--initial` rows and their index; LIMIT 10 queries on an
   idle index (latency median and p99), then one client inserts `--rows` rows one INSERT
   at a time as fast as it can while another runs the same queries; then the time until
   the buffer is empty. The same single-row INSERTs into a table without a vector index
   give the INSERT latency baseline twice: alone, and while the other client runs the same
   queries on an idle omen index of the same initial rows in another table (the same load
   on the cores, without the index the rows go to). The inserting client is a process of
   its own (two threads of one Python process would take turns on its interpreter lock).
4. pgvector HNSW beside it: the same stream of `--pgvector-rows` rows (its inserts are
   slower) into the same `--initial` rows with an HNSW index, the same queries.

Writes bench/results/<dataset>-ingest.md.

Usage: bench/run.sh DATA --ingest [--initial N] [--rows N] [--merge-rows N] [--pgvector-rows N]
"""

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np
import psycopg
from inserts import load_staging, prepare

from common import fresh_db, metric_of, phase, say, vecs, write_results

DB = "ingest"


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def buffered(conn) -> int:
    return conn.execute("SELECT buffered_entries FROM omen_index_info('items_v')").fetchone()[0]


def wait_empty(conn, limit_s: float = 600.0) -> float:
    """Seconds until the insert buffer is empty (polled every 0.2 s)."""
    t0 = time.perf_counter()
    while buffered(conn) and time.perf_counter() - t0 < limit_s:
        time.sleep(0.2)
    return time.perf_counter() - t0


def wait_workers_done(conn, limit_s: float = 120.0) -> None:
    """Waits until no merge worker runs (the last one repairs reachability before it exits)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'omen merge worker'"
    t0 = time.perf_counter()
    while conn.execute(sql).fetchone()[0] and time.perf_counter() - t0 < limit_s:
        time.sleep(0.2)


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def query_latencies(
    conn, texts: list[str], op: str, stop=None, count: int | None = None, table: str = "items"
) -> list[float]:
    """Latencies (ms) of LIMIT 10 queries on `table`, cycling through `texts`, until `stop`
    is set or `count` ran."""
    sql = f"SELECT id FROM {table} ORDER BY v {op} %s::vector LIMIT 10"
    out, i = [], 0
    while (count is None or i < count) and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        conn.execute(sql, (texts[i % len(texts)],), prepare=True).fetchall()
        out.append((time.perf_counter() - t0) * 1000)
        i += 1
    return out


def insert_stream(rows: int, latencies: list[float]) -> None:
    """Single-row INSERTs of staging ids 1..rows, one connection, as fast as it goes."""
    with connect() as conn:
        sql = "INSERT INTO items SELECT id, v FROM staging WHERE id = %s"
        for i in range(1, rows + 1):
            t0 = time.perf_counter()
            conn.execute(sql, (i,), prepare=True)
            latencies.append((time.perf_counter() - t0) * 1000)


def insert_client(rows: int, out, started, done) -> None:
    """The inserting client as a process of its own: two clients in one Python process would
    take turns on its interpreter lock (a 5 ms switch interval), which no real pair of clients
    does. Sets `started` before the first INSERT and `done` after the last, then sends its
    latencies and its elapsed seconds through `out`."""
    latencies: list[float] = []
    started.set()
    t0 = time.perf_counter()
    insert_stream(rows, latencies)
    elapsed = time.perf_counter() - t0
    done.set()
    out.put((latencies, elapsed))


def autovacuums(conn) -> int:
    """Autovacuum runs on `items` since `prepare` made it (insert-triggered VACUUMs run
    beside the stream, and are part of what its latencies saw)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'items'").fetchone()
    return row[0] if row else 0


def merge_workers(conn) -> str:
    """`omen.max_merge_workers`, and for -1 the counts the server says it means here
    (omen_index_info_json of `items_v`): workers while rows arrive, and once none has arrived
    for a second."""
    value = int(conn.execute("SHOW omen.max_merge_workers").fetchone()[0])
    if value != -1:
        return str(value)
    info = conn.execute("SELECT omen_index_info_json('items_v')::text::json").fetchone()[0]
    return f"-1: {info['merge_workers']} while rows arrive, {info['merge_workers_quiet']} after"


def autogroup() -> str:
    """Whether the kernel groups processes by session for scheduling (it then shares the
    cores between the clients' session and the server's first, whatever the nice values)."""
    try:
        return "on" if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1" else "off"
    except OSError:
        return "unknown"


def stream_while_querying(conn, texts: list[str], op: str, rows: int, table: str = "items"):
    """Queries on the idle index of `table`, then the same queries while another client (a
    process of its own) inserts `rows` rows one at a time into `items`. Returns (idle
    latencies, busy latencies, INSERT latencies, the inserting client's seconds)."""
    query_latencies(conn, texts, op, count=200, table=table)  # warm
    idle = query_latencies(conn, texts, op, count=1000, table=table)
    mp = multiprocessing.get_context("spawn")
    started, stop, out = mp.Event(), mp.Event(), mp.Queue()
    writer = mp.Process(target=insert_client, args=(rows, out, started, stop))
    writer.start()
    assert started.wait(120), "the inserting client did not start"
    busy = query_latencies(conn, texts, op, stop=stop, table=table)
    ins_lat, insert_s = out.get()
    writer.join()
    return idle, busy, ins_lat, insert_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--initial", type=int, default=60_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--merge-rows", type=int, default=20_000)
    ap.add_argument("--baseline-rows", type=int, default=20_000)
    ap.add_argument("--pgvector-rows", type=int, default=20_000)
    args = ap.parse_args()
    folder = Path(args.data)
    with phase(f"read {folder.name}"):
        base, queries, _ = vecs.load(folder)
    ops, op = metric_of(folder.name)
    dims = base.shape[1]
    texts = [vecs.vector_text(q) for q in queries[:500]]
    fresh_db(DB)
    with connect() as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION omendb")
        with phase(f"staging: {args.initial} initial + {args.rows} rows to insert"):
            load_staging(conn, base, max(args.rows, args.merge_rows), args.initial)

    md = [f"### {folder.name}: sustained ingest ({args.initial:,} rows indexed first, {dims} dimensions)", ""]
    with connect() as conn:
        # 1. One backend merges with omen_flush.
        with phase(f"omen_flush: {args.initial} rows indexed, {args.merge_rows} buffered"):
            never = "WITH (buffer_threshold = 100000000)"
            prepare(conn, dims, f"CREATE INDEX items_v ON items USING omen (v {ops}) {never}")
            conn.execute(f"INSERT INTO items SELECT id, v FROM staging WHERE id BETWEEN 1 AND {args.merge_rows}")
        t0 = time.perf_counter()
        merged = conn.execute("SELECT omen_flush('items_v')").fetchone()[0]
        flush_rate = merged / (time.perf_counter() - t0)
        say(f"omen_flush merged {merged} entries: {flush_rate:,.0f} entries/s")
        ok = conn.execute("SELECT ok FROM omen_check('items_v')").fetchone()[0]
        assert ok, "omen_check failed after omen_flush"

        # 2. The background worker merges.
        with phase(f"worker: {args.initial} rows indexed, {args.merge_rows} buffered at once"):
            prepare(conn, dims, f"CREATE INDEX items_v ON items USING omen (v {ops})")
            conn.execute(f"INSERT INTO items SELECT id, v FROM staging WHERE id BETWEEN 1 AND {args.merge_rows}")
        # Workers start while the INSERT runs: count what is left at its commit.
        at_commit = buffered(conn)
        worker_s = wait_empty(conn)
        worker_rate = at_commit / worker_s
        say(f"the workers merged the {at_commit} entries left at the commit in {worker_s:.1f} s: {worker_rate:,.0f}/s")

        # 3. Single-row INSERTs without a vector index: the latency baseline.
        with phase(f"no vector index: {args.baseline_rows} single-row INSERTs"):
            prepare(conn, dims, None)
            base_lat: list[float] = []
            insert_stream(args.baseline_rows, base_lat)
        base_autovacuums = autovacuums(conn)
        with phase(f"no vector index: {args.baseline_rows} single-row INSERTs while another client queries"):
            # The queries go to an idle omen index of the same initial rows in another table.
            prepare(conn, dims, None)
            conn.execute("DROP TABLE IF EXISTS probe")
            conn.execute("CREATE TABLE probe AS SELECT id, v FROM staging WHERE id < 0")
            conn.execute(f"CREATE INDEX probe_v ON probe USING omen (v {ops})")
            conn.execute("VACUUM ANALYZE probe")
            _, _, base_busy_lat, base_busy_s = stream_while_querying(conn, texts, op, args.baseline_rows, table="probe")
            conn.execute("DROP TABLE probe")

        # 4. Queries while one client inserts.
        merge_nice = conn.execute("SHOW omen.merge_worker_nice").fetchone()[0]
        with phase(f"omen: {args.initial} rows and their index"):
            prepare(conn, dims, f"CREATE INDEX items_v ON items USING omen (v {ops})")
        workers = merge_workers(conn)
        with phase(f"omen: {args.rows} single-row INSERTs while another client queries"):
            idle, busy, ins_lat, insert_s = stream_while_querying(conn, texts, op, args.rows)
        left = buffered(conn)
        drain_s = wait_empty(conn)
        say(f"{left} entries buffered at the last insert; empty {drain_s:.1f} s later")
        omen_autovacuums = autovacuums(conn)
        wait_workers_done(conn)
        ok, nodes = conn.execute("SELECT ok, nodes FROM omen_check('items_v')").fetchone()
        rows_now = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        if not ok:
            problems = conn.execute("SELECT problems FROM omen_check('items_v')").fetchone()[0]
            raise AssertionError(f"omen_check failed: {problems}")
        assert nodes == rows_now, f"omen_check: {nodes} nodes for {rows_now} rows"

        # 5. pgvector HNSW beside it: the same stream (fewer rows: its inserts are slower).
        with phase(f"pgvector: {args.initial} rows and their HNSW index"):
            prepare(
                conn, dims, f"CREATE INDEX items_v ON items USING hnsw (v {ops}) WITH (m = 16, ef_construction = 64)"
            )
        with phase(f"pgvector: {args.pgvector_rows} single-row INSERTs while another client queries"):
            pv_idle, pv_busy, pv_ins, pv_insert_s = stream_while_querying(conn, texts, op, args.pgvector_rows)

    def query_row(label: str, lat: list[float]) -> str:
        return f"| {label} | {len(lat)} | {pct(lat, 50):.2f} | {pct(lat, 99):.2f} |"

    def ratio_row(label: str, busy_lat: list[float], idle_lat: list[float]) -> str:
        median, p99 = pct(busy_lat, 50) / pct(idle_lat, 50), pct(busy_lat, 99) / pct(idle_lat, 99)
        return f"| {label} | | {median:.2f}× | {p99:.2f}× |"

    def insert_ratio_row(label: str, lat: list[float], base: list[float]) -> str:
        return f"| {label} | | | {pct(lat, 50) / pct(base, 50):.2f}× | {pct(lat, 99) / pct(base, 99):.2f}× |"

    def insert_row(label: str, lat: list[float], seconds: float) -> str:
        return f"| {label} | {len(lat):,} | {len(lat) / seconds:,.0f} | {pct(lat, 50):.3f} | {pct(lat, 99):.3f} |"

    md += [
        "| merge | entries | entries/s |",
        "|---|---:|---:|",
        f"| one backend (`omen_flush`) | {merged:,} | {flush_rate:,.0f} |",
        f"| background workers (`omen.max_merge_workers` = {workers}; entries left at the INSERT's commit, until the "
        f"buffer is empty) | {at_commit:,} | {worker_rate:,.0f} |",
        "",
        "| LIMIT 10 queries | count | median (ms) | p99 (ms) |",
        "|---|---:|---:|---:|",
        query_row("omen, idle index", idle),
        query_row("omen, while one client inserts", busy),
        ratio_row("omen, ratio", busy, idle),
        query_row("pgvector HNSW, idle index", pv_idle),
        query_row("pgvector HNSW, while one client inserts", pv_busy),
        ratio_row("pgvector HNSW, ratio", pv_busy, pv_idle),
        "",
        "| single-row INSERT | rows | rows/s | median (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|",
        insert_row("no vector index, alone", base_lat, sum(base_lat) / 1000),
        insert_row("no vector index, while another client queries (an idle omen index)", base_busy_lat, base_busy_s),
        insert_row("omen (while another client queries)", ins_lat, insert_s),
        insert_ratio_row("omen, ratio to no index alone", ins_lat, base_lat),
        insert_ratio_row("omen, ratio to no index while another client queries", ins_lat, base_busy_lat),
        insert_row("pgvector HNSW (while another client queries)", pv_ins, pv_insert_s),
        insert_ratio_row("pgvector HNSW, ratio to no index alone", pv_ins, base_lat),
        insert_ratio_row("pgvector HNSW, ratio to no index while another client queries", pv_ins, base_busy_lat),
        "",
        f"- buffered entries at the last insert: {left:,}; the buffer was empty {drain_s:.1f} s later",
        f"- after: omen_check ok, {nodes:,} nodes for {rows_now:,} rows",
        f"- autovacuum runs on the table: {base_autovacuums} during the stream without a vector index "
        f"(alone), {omen_autovacuums} during omen's stream and until the buffer was empty",
        f"- the two clients are processes of their own; `omen.merge_worker_nice` = "
        f"{merge_nice}; the kernel's autogroup scheduling is {autogroup()}",
    ]
    write_results(f"{folder.name}-ingest.md", md)


if __name__ == "__main__":
    main()
