"""Insert benchmark: single-row INSERT latency and throughput into an indexed table.

One PostgreSQL 18 + pgvector server (bench/run.sh --inserts starts it). A staging table
holds the rows to insert: the data set's base vectors, then (past its end) the same
vectors again with a little seeded noise, so there are as many distinct rows as asked for.
For each engine and client count, a fresh table `items(id int primary key, v vector(d))`
gets `--initial` rows and its index (untimed), then pgbench runs single-row INSERT
transactions (`INSERT INTO items SELECT id, v FROM staging WHERE id = (SELECT
nextval('next_id'))`) from 1 or 8 clients, logging every transaction's latency:

- no vector index (the baseline: the heap, its TOAST table and the primary key);
- omen with the insert buffer (`buffer = on`, the default);
- omen with `buffer = off` (inserts go into the graph in place);
- pgvector HNSW (m 16, ef_construction 64: pgvector's defaults).

The in-place engines insert `--slow-rows` rows (fewer: they are slow). For omen with the
buffer the run also reports what was left to merge when the inserts ended, the merge's
rate over the next `--merge-wait` s (at most), and the latency of 20 queries then and after.
Writes bench/results/<dataset>-inserts.md and .png (latency against rows inserted).

Usage: inserts.py DATA_FOLDER [--rows N] [--slow-rows N] [--initial N] [--merge-wait S]
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from common import RESULTS, fresh_db, phase, say, vecs

PGBENCH = Path(os.environ.get("PGBENCH", "pgbench"))
DB = "inserts"


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def load_staging(conn, base: np.ndarray, rows: int, initial: int) -> None:
    """staging ids 1..rows: rows to insert; ids -initial..-1: the rows each table starts with."""
    rng = np.random.default_rng(7)
    conn.execute(f"CREATE TABLE staging (id int PRIMARY KEY, v vector({base.shape[1]}))")
    spread = float(np.std(base)) * 0.01
    with conn.cursor().copy("COPY staging (id, v) FROM STDIN") as copy:
        for i in range(initial + rows):
            v = base[i % len(base)]
            if i >= len(base):
                v = v + rng.normal(0, spread, size=v.shape).astype(np.float32)
            copy.write_row((i - initial + 1 if i >= initial else -(i + 1), vecs.vector_text(v)))
    conn.execute("VACUUM ANALYZE staging")
    # Read every vector once (heap and TOAST) so that no run pays for bringing the staging
    # table into shared_buffers.
    conn.execute("SELECT sum(vector_dims(v)) FROM staging")


ENGINES = {
    "no vector index": None,
    "omen, buffer = on": "CREATE INDEX items_v ON items USING omen (v vector_l2_ops)",
    "omen, buffer = off": "CREATE INDEX items_v ON items USING omen (v vector_l2_ops) WITH (buffer = off)",
    "pgvector hnsw": "CREATE INDEX items_v ON items USING hnsw (v vector_l2_ops)",
}
SLOW = {"omen, buffer = off", "pgvector hnsw"}


def prepare(conn, dims: int, index_sql: str | None) -> None:
    conn.execute("DROP TABLE IF EXISTS items")
    conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({dims}))")
    conn.execute("INSERT INTO items SELECT id, v FROM staging WHERE id < 0")
    if index_sql:
        conn.execute(index_sql)
    conn.execute("VACUUM ANALYZE items")
    conn.execute("DROP SEQUENCE IF EXISTS next_id")
    conn.execute("CREATE SEQUENCE next_id")
    conn.execute("CHECKPOINT")


def run_pgbench(clients: int, rows: int) -> tuple[float, list[tuple[float, float]]]:
    """Runs the inserts; returns (rows/s, [(completion time, latency ms)] in completion order)."""
    with tempfile.TemporaryDirectory(prefix="omen-bench-inserts-") as tmp:
        script = Path(tmp) / "insert.sql"
        script.write_text("INSERT INTO items SELECT id, v FROM staging WHERE id = (SELECT nextval('next_id'));\n")
        env = dict(os.environ, PGDATABASE=DB)
        log = ["--log-prefix", f"{tmp}/log"]
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(PGBENCH), *f"-n -c {clients} -j {clients} -t {rows // clients} -f {script} -l".split(), *log],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wall = time.perf_counter() - t0
        failed = re.search(r"number of failed transactions: (\d+)", out)
        if failed and failed.group(1) != "0":
            raise RuntimeError(f"pgbench reported failures:\n{out}")
        samples = []
        for log in Path(tmp).glob("log*"):
            for line in log.read_text().splitlines():
                f = line.split()
                samples.append((int(f[4]) + int(f[5]) / 1e6, int(f[2]) / 1000.0))
        samples.sort()
        return (rows // clients) * clients / wall, samples


def query_ms(conn, texts: list[str]) -> float:
    """Median latency (ms) of nearest-neighbour queries through the index."""
    conn.execute("SET enable_seqscan = off")
    times = []
    for q in texts:
        t0 = time.perf_counter()
        conn.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 10", (q,)).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    conn.execute("RESET enable_seqscan")
    return statistics.median(times)


def buffered(conn) -> int:
    return conn.execute("SELECT buffered_entries FROM omen_index_info('items_v')").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--slow-rows", type=int, default=20_000)
    ap.add_argument("--initial", type=int, default=10_000)
    ap.add_argument("--merge-wait", type=int, default=120)
    ap.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="only run K alternating pairs (no index, omen buffer = on), 1 client, --rows rows each",
    )
    ap.add_argument(
        "--defer-merge",
        action="store_true",
        help="with --pairs: a threshold no run reaches, so no merge worker runs during the inserts",
    )
    args = ap.parse_args()
    folder = Path(args.data)
    with phase(f"read {folder.name}"):
        base, queries, _ = vecs.load(folder)
    texts = [vecs.vector_text(q) for q in queries[:20]]
    fresh_db(DB)
    with connect() as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION omendb")
        versions = conn.execute(
            "SELECT version(), (SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        ).fetchone()
        with phase(f"staging: {args.initial} initial + {args.rows} rows to insert"):
            load_staging(conn, base, args.rows, args.initial)

    if args.pairs:
        run_pairs(folder.name, args, base.shape[1], versions)
        return
    results = []
    curves = {}
    for clients in (1, 8):
        for engine, index_sql in ENGINES.items():
            rows = args.slow_rows if engine in SLOW else args.rows
            with phase(f"{engine}: a fresh table of {args.initial} rows and its index"), connect() as conn:
                prepare(conn, base.shape[1], index_sql)
            with phase(f"{engine}: {rows} single-row INSERTs from {clients} client(s)"):
                rate, samples = run_pgbench(clients, rows)
            lat = np.array([s[1] for s in samples])
            row = {
                "engine": engine,
                "clients": clients,
                "rows": len(lat),
                "rate": rate,
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
            }
            if engine == "omen, buffer = on":
                with connect() as conn:
                    left = buffered(conn)
                    row["buffered_at_end"] = left
                    row["query_ms_buffer_full"] = query_ms(conn, texts)
                    t0 = time.perf_counter()
                    say(f"{engine}: {left} entries buffered; waiting up to {args.merge_wait} s for the merge")
                    while left and time.perf_counter() - t0 < args.merge_wait:
                        time.sleep(1)
                        left = buffered(conn)
                    row["catch_up_s"] = time.perf_counter() - t0
                    row["buffered_after_wait"] = left
                    row["merge_rate"] = (row["buffered_at_end"] - left) / row["catch_up_s"]
                    row["query_ms_after_merge"] = query_ms(conn, texts)
            results.append(row)
            curves[(engine, clients)] = lat
            say(
                f"{engine:20s} {clients} client(s): {len(lat)} rows, {rate:7.0f} rows/s, "
                f"p50 {row['p50']:.3f} ms, p99 {row['p99']:.3f} ms, max {row['max']:.1f} ms"
                + (
                    f"; {row['buffered_at_end']} buffered at the end, after {row['catch_up_s']:.0f} s of merging "
                    f"{row['buffered_after_wait']} left ({row['merge_rate']:.0f} entries/s); query "
                    f"{row['query_ms_buffer_full']:.1f} ms with the buffer full, "
                    f"{row['query_ms_after_merge']:.1f} ms after"
                    if "catch_up_s" in row
                    else ""
                )
            )
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS items")
    write_report(folder.name, args, versions, results, curves)


def run_pairs(name, args, dims: int, versions) -> None:
    """Alternates single-client runs without a vector index and with omen (buffer on), K
    times each, so that the machine's drift hits both alike; reports medians and ratios."""
    omen = "omen, buffer = on" + (", merges deferred" if args.defer_merge else "")
    ddl = {
        "no vector index": None,
        omen: ENGINES["omen, buffer = on"] + (" WITH (buffer_threshold = 100000000)" if args.defer_merge else ""),
    }
    rates = {"no vector index": [], omen: []}
    for k in range(args.pairs):
        for engine in rates:
            with connect() as conn:
                prepare(conn, dims, ddl[engine])
            with phase(f"pair {k + 1}, {engine}: {args.rows} single-row INSERTs"):
                rate, samples = run_pgbench(1, args.rows)
            lat = np.array([s[1] for s in samples])
            rates[engine].append((rate, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max())))
            say(
                f"pair {k + 1} {engine:20s}: {rate:7.0f} rows/s, p50 {rates[engine][-1][1]:.3f} ms, "
                f"p99 {rates[engine][-1][2]:.3f} ms, max {rates[engine][-1][3]:.1f} ms"
            )
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS items")
    ratios = [a[0] / b[0] for a, b in zip(rates["no vector index"], rates[omen], strict=True)]
    lines = [
        f"# Single-client INSERT, omen (buffer = on) against no vector index: {name}",
        "",
        f"Command: `make bench-inserts DATA=../shared/data/{name} ARGS='--pairs {args.pairs} --rows {args.rows}"
        f"{' --defer-merge' if args.defer_merge else ''}'` "
        f"({args.pairs} alternating pairs of {args.rows} single-row INSERTs, initial rows {args.initial}; "
        f"{versions[0].split(',')[0]}, pgvector {versions[1]}).",
        "",
        "| engine | median rows/s | median p50 ms | median p99 ms | median max ms | runs (rows/s) |",
        "|---|---|---|---|---|---|",
    ]
    for engine, runs in rates.items():
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        lines.append(
            f"| {engine} | {med[0]:.0f} | {med[1]:.3f} | {med[2]:.3f} | {med[3]:.1f} | "
            f"{', '.join(f'{r[0]:.0f}' for r in runs)} |"
        )
    lines += [
        "",
        f"Time per insert, omen over no index, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f}×.",
    ]
    suffix = "-deferred" if args.defer_merge else ""
    (RESULTS / f"{name}-inserts-pairs{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_report(name, args, versions, results, curves) -> None:
    RESULTS.mkdir(exist_ok=True)
    baseline = {r["clients"]: r for r in results if r["engine"] == "no vector index"}
    lines = [
        f"# Insert latency and throughput: {name}",
        "",
        f"Command: `make bench-inserts DATA=../shared/data/{name}` (rows {args.rows}, in-place engines "
        f"{args.slow_rows}, initial rows {args.initial}).",
        "",
        f"Server: {versions[0].split(',')[0]}, pgvector {versions[1]}; one server, same run, "
        "single-row INSERT transactions from pgbench.",
        "",
        "| engine | clients | rows | rows/s | time vs no index | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = baseline[r["clients"]]["rate"] / r["rate"]
        lines.append(
            f"| {r['engine']} | {r['clients']} | {r['rows']} | {r['rate']:.0f} | {ratio:.2f}× | "
            f"{r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.1f} |"
        )
    lines += [
        "",
        "With the buffer: what was left to merge when the inserts ended, the background merge's rate "
        f"over the next {args.merge_wait} s at most, and the median latency of 20 queries (LIMIT 10) with "
        "that buffer and after the wait.",
        "",
        "| clients | buffered at the end | merged in | left | merge rate | query ms, at the end | query ms, after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "catch_up_s" in r:
            lines.append(
                f"| {r['clients']} | {r['buffered_at_end']} | {r['catch_up_s']:.0f} s | "
                f"{r['buffered_after_wait']} | {r['merge_rate']:.0f}/s | {r['query_ms_buffer_full']:.1f} | "
                f"{r['query_ms_after_merge']:.1f} |"
            )
    (RESULTS / f"{name}-inserts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, clients in zip(axes, (1, 8), strict=True):
        for (engine, c), lat in curves.items():
            if c != clients:
                continue
            window = 500
            n = len(lat) // window
            p99 = [np.percentile(lat[i * window : (i + 1) * window], 99) for i in range(n)]
            mx = [lat[i * window : (i + 1) * window].max() for i in range(n)]
            x = [(i + 1) * window for i in range(n)]
            (line,) = ax.plot(x, p99, label=f"{engine} (p99)")
            ax.plot(x, mx, color=line.get_color(), alpha=0.3, linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("rows inserted")
        ax.set_title(f"{clients} client(s): p99 per 500 rows (faint: max)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("INSERT latency, ms")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}-inserts.png", dpi=110)


if __name__ == "__main__":
    main()
