"""Build benchmark, omen beside pgvector HNSW: CREATE INDEX on the same rows in two
databases of one server, under a `maintenance_work_mem` and `max_parallel_maintenance_workers`
of your choice (PostgreSQL's defaults unless told: 64MB and 2), so that a set bigger than the
memory shows what a build past it costs. Per engine: the build time, the index size, the WAL
the build wrote, and the NOTICE that says the build ran past its memory. Writes
bench/results/<dataset>-build-<mwm>.md.

Usage: build.py DATA_FOLDER [--mwm 64MB] [--workers 2]   (libpq environment; bench/run.sh
--build starts the server)
"""

import argparse
import time
from pathlib import Path

import psycopg

from common import fresh_db, metric_of, phase, say, vecs, write_results

ENGINES = {
    "pgvector": ("vector", "hnsw", "WITH (m = 16, ef_construction = 64)"),
    "omen": ("omendb", "omen", ""),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--mwm", default="64MB")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    folder = Path(args.data)
    with phase(f"read {folder.name}"):
        base, _, _ = vecs.load(folder)
    ops, _ = metric_of(folder.name)
    results = {}
    for engine, (extension, am, with_) in ENGINES.items():
        db = f"bench_build_{engine}"
        fresh_db(db)
        with psycopg.connect(dbname=db, autocommit=True) as conn:
            conn.execute(f"CREATE EXTENSION {extension}")
            conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
            with phase(f"{db}: COPY {len(base)} x {base.shape[1]}, VACUUM ANALYZE, CHECKPOINT"):
                with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
                    for i, v in enumerate(base):
                        copy.write_row((i, vecs.vector_text(v)))
                conn.execute("VACUUM ANALYZE items")
                conn.execute("CHECKPOINT")
            conn.execute(f"SET maintenance_work_mem = '{args.mwm}'")
            conn.execute(f"SET max_parallel_maintenance_workers = {args.workers}")
            notices: list[str] = []
            conn.add_notice_handler(lambda d, into=notices: into.append(d.message_primary or ""))
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            sql = f"CREATE INDEX items_v ON items USING {am} (embedding {ops}) {with_}"
            t0 = time.perf_counter()
            with phase(f"{db}: {sql}"):
                conn.execute(sql)
            seconds = time.perf_counter() - t0
            wal, size = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s), pg_relation_size('items_v')", (lsn,)
            ).fetchone()
            results[engine] = (seconds, size, float(wal), "; ".join(notices) or "none")
            say(f"{engine}: {seconds:.1f} s, index {size / 2**20:.0f} MiB, WAL {float(wal) / 2**20:.0f} MiB")
        fresh_db(db)  # leaves an empty database: the next engine's build has the disk to itself

    o, p = results["omen"], results["pgvector"]
    md = [
        f"### {folder.name}: CREATE INDEX on {len(base):,} × {base.shape[1]}, "
        f"maintenance_work_mem {args.mwm}, max_parallel_maintenance_workers {args.workers}",
        "",
        "| engine | build (s) | index (MiB) | WAL of the build (MiB) | notice |",
        "|---|---:|---:|---:|---|",
    ]
    for engine, (s, size, wal, notice) in results.items():
        md.append(f"| {engine} | {s:.1f} | {size / 2**20:.0f} | {wal / 2**20:.0f} | {notice} |")
    md += [
        "",
        f"- build time omen/pgvector: {o[0] / p[0]:.2f}×; index size {o[1] / p[1]:.2f}×; WAL {o[2] / p[2]:.2f}×",
    ]
    write_results(f"{folder.name}-build-{args.mwm}.md", md)


if __name__ == "__main__":
    main()
