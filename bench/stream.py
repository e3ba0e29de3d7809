"""Flat to a million rows: single-row INSERT latency from the first row to the last, and a
bulk load, into a table without a vector index, with omen, and with pgvector HNSW.

One PostgreSQL 18 server (bench/run.sh DATA --stream starts it). The rows come from a
staging table (bench/inserts.py's: the data set's base vectors, then the same vectors again
with 1% seeded Gaussian noise, as many as asked for). Each engine gets a fresh table of
`--initial` rows and its index, then one pgbench client inserts `--rows` rows one INSERT at
a time (pgvector: `--slow-rows`), logging every latency; the report gives the median of
every 10,000-row window against the overall median. Then the same rows are loaded again in
bulk into a fresh table with one `COPY … FROM` a file the server wrote from the staging
table (`COPY (SELECT …) TO`, untimed, emptied afterwards), timed, and for omen the time until
its insert buffer is merged.

Writes bench/results/<dataset>-stream.md and .png (median latency per 10,000-row window).

Usage: bench/run.sh DATA --stream [--rows N] [--slow-rows N] [--initial N]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import psycopg
from inserts import load_staging, prepare, run_pgbench

from common import RESULTS, fresh_db, metric_of, phase, say, vecs

DB = "inserts"
WINDOW = 10_000
# Seconds to wait for omen's buffer to empty after a load (what is left is reported).
DRAIN_WAIT = 300


def connect():
    return psycopg.connect(dbname=DB, autocommit=True)


def buffered(conn) -> int:
    return conn.execute("SELECT buffered_entries FROM omen_index_info('items_v')").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--slow-rows", type=int, default=100_000)
    ap.add_argument("--initial", type=int, default=10_000)
    args = ap.parse_args()
    folder = Path(args.data)
    with phase(f"read {folder.name}"):
        base, _, _ = vecs.load(folder)
    ops, _ = metric_of(folder.name)
    engines = {
        "no vector index": (None, args.rows),
        "omen": (f"CREATE INDEX items_v ON items USING omen (v {ops})", args.rows),
        "pgvector hnsw": (f"CREATE INDEX items_v ON items USING hnsw (v {ops})", args.slow_rows),
    }
    dims = base.shape[1]
    fresh_db(DB)
    with connect() as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION omendb")
        with phase(f"staging: {args.initial} initial + {args.rows} rows"):
            load_staging(conn, base, args.rows, args.initial)

    results = {}
    for engine, (ddl, rows) in engines.items():
        with phase(f"{engine}: a fresh table of {args.initial} rows"), connect() as conn:
            prepare(conn, dims, ddl)
        with phase(f"{engine}: {rows} single-row INSERTs, one client"):
            rate, samples = run_pgbench(1, rows)
        lat = np.array([s[1] for s in samples])
        windows = [float(np.median(lat[i : i + WINDOW])) for i in range(0, len(lat) - WINDOW + 1, WINDOW)]
        overall = float(np.median(lat))
        res = {
            "rows": len(lat),
            "rate": rate,
            "p50": overall,
            "p99": float(np.percentile(lat, 99)),
            "windows": windows,
            "worst": max(windows) / overall if windows else float("nan"),
        }
        if ddl and "omen" in ddl:
            with connect() as conn:
                left, t0 = buffered(conn), time.perf_counter()
                while buffered(conn) and time.perf_counter() - t0 < DRAIN_WAIT:
                    time.sleep(1)
                res["drain"] = (left, time.perf_counter() - t0, buffered(conn))
        with phase(f"{engine}: {rows} rows in one COPY"), connect() as conn:
            prepare(conn, dims, ddl)
            # A file in the server's data directory, written by the server.
            datadir = conn.execute("SHOW data_directory").fetchone()[0]
            copy_file = f"{datadir}/stream_rows_{rows}.copy"
            conn.execute(f"COPY (SELECT id, v FROM staging WHERE id BETWEEN 1 AND {rows}) TO '{copy_file}'")
            t0 = time.perf_counter()
            conn.execute(f"COPY items (id, v) FROM '{copy_file}'")
            res["bulk_s"] = time.perf_counter() - t0
            conn.execute(f"COPY (SELECT 1 WHERE false) TO '{copy_file}'")  # empty it
            if ddl and "omen" in ddl:
                left, t0 = buffered(conn), time.perf_counter()
                while buffered(conn) and time.perf_counter() - t0 < DRAIN_WAIT:
                    time.sleep(1)
                res["bulk_drain"] = (left, time.perf_counter() - t0, buffered(conn))
        results[engine] = res
        say(
            f"{engine}: {len(lat)} rows, {rate:,.0f} rows/s, median {overall:.3f} ms, p99 {res['p99']:.3f} ms, "
            f"worst 10,000-row window median {res['worst']:.2f}× the overall; bulk {res['bulk_s']:.1f} s"
        )

    base_res = results["no vector index"]
    md = [
        f"### {folder.name}: single-row INSERT stream and bulk load ({dims} dimensions, {args.initial:,} rows first)",
        "",
        "| engine | rows | rows/s | median (ms) | p99 (ms) | median vs no index | p99 vs no index "
        "| worst 10,000-row window median / overall | bulk COPY (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, r in results.items():
        md.append(
            f"| {engine} | {r['rows']:,} | {r['rate']:,.0f} | {r['p50']:.3f} | {r['p99']:.3f} | "
            f"{r['p50'] / base_res['p50']:.2f}× | {r['p99'] / base_res['p99']:.2f}× | {r['worst']:.2f}× | "
            f"{r['bulk_s']:.1f} |"
        )
    om = results["omen"]
    md += [
        "",
        f"- omen: {om['drain'][0]:,} entries buffered when the stream ended, {om['drain'][2]:,} left "
        f"{om['drain'][1]:.0f} s later; after the bulk load {om['bulk_drain'][0]:,} buffered, "
        f"{om['bulk_drain'][2]:,} left {om['bulk_drain'][1]:.0f} s later",
        f"- pgvector HNSW ran {results['pgvector hnsw']['rows']:,} rows (its time allows no more)",
    ]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{folder.name}-stream.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for engine, r in results.items():
        xs = [(i + 1) * WINDOW for i in range(len(r["windows"]))]
        ax.plot(xs, r["windows"], label=engine)
    ax.set_xlabel("rows inserted")
    ax.set_ylabel(f"median INSERT latency per {WINDOW:,} rows (ms)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{folder.name}: single-row INSERTs, one client")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{folder.name}-stream.png", dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
