"""The OmenDB demo: a table of vectors, an omen index when the access method exists, and a
few nearest-neighbour queries printed with their timings.

Usage: demo.py [DATA_FOLDER]   (a folder holding *_base.{f,b}vecs and *_query.{f,b}vecs;
without one, 10,000 random 128-dimensional vectors are generated).
"""

import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
import vecs
from progress import Progress

K = 5
QUERIES = 5


def main() -> None:
    progress = Progress()
    if len(sys.argv) > 1 and sys.argv[1]:
        folder = Path(sys.argv[1])
        with progress.phase(f"read {folder.name}"):
            base = vecs.read_vecs(vecs.find(folder, "base"))
            queries = vecs.read_vecs(vecs.find(folder, "query"))[:QUERIES]
        source = f"{len(base)} vectors of {folder.name}"
    else:
        rng = np.random.default_rng(42)
        base = rng.standard_normal((10_000, 128)).astype(np.float32)
        queries = rng.standard_normal((QUERIES, 128)).astype(np.float32)
        source = "10000 random 128-dimensional vectors"
    dim = base.shape[1]

    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS omen_demo")
        admin.execute("CREATE DATABASE omen_demo")
    with psycopg.connect(dbname="omen_demo", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION omendb")
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({dim}))")
        copy_sql = "COPY items (id, embedding) FROM STDIN"
        with progress.phase(f"load {source}"), conn.cursor().copy(copy_sql) as copy:
            for i, v in enumerate(base):
                copy.write_row((i, vecs.vector_text(v)))

        has_omen = conn.execute("SELECT count(*) FROM pg_am WHERE amname = 'omen'").fetchone()[0]
        if has_omen:
            with progress.phase("build the omen index"):
                conn.execute("CREATE INDEX ON items USING omen (embedding vector_l2_ops)")
        plan = conn.execute(
            "EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY embedding <-> %s LIMIT 5",
            (vecs.vector_text(queries[0]),),
        ).fetchall()
        print("plan:", " / ".join(r[0].strip() for r in plan if "Key:" not in r[0] and "Order By:" not in r[0]))

        print(f"\nthe {K} nearest rows of {len(queries)} queries (L2 distance):\n")
        print(f"{'query':>5}  {'time (ms)':>9}  {'rank':>4}  {'id':>8}  {'distance':>10}")
        for qi, q in enumerate(queries):
            t0 = time.perf_counter()
            rows = conn.execute(
                "SELECT id, embedding <-> %s FROM items ORDER BY embedding <-> %s LIMIT %s",
                (vecs.vector_text(q), vecs.vector_text(q), K),
            ).fetchall()
            ms = (time.perf_counter() - t0) * 1000
            for rank, (row_id, distance) in enumerate(rows, 1):
                first = rank == 1
                print(
                    f"{qi if first else '':>5}  {f'{ms:.2f}' if first else '':>9}  {rank:>4}  {row_id:>8}  "
                    f"{distance:>10.3f}"
                )
    progress.say("done")


if __name__ == "__main__":
    main()
