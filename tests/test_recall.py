"""Recall@10 of the omen index through SQL, against the exact ground truth of the data sets
in ../shared/data, at default settings: at least 0.95 each.

Usage: test_recall.py [--pgvector] DATA_FOLDER...   (libpq environment: PGHOST, PGPORT, ...)
With --pgvector, pgvector is installed first and the index is built on its `vector` column.
"""

import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import vecs  # noqa: E402

THRESHOLD = 0.95
K = 10


def recall_for(folder: Path, pgvector_first: bool) -> float:
    base, queries, truth = vecs.load(folder)
    db = "omen_recall_" + folder.name.replace("-", "_")
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db}")
    with psycopg.connect(dbname=db, autocommit=True) as conn:
        if pgvector_first:
            conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE EXTENSION omendb")
        if pgvector_first:
            owner = conn.execute(
                "SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
                "WHERE d.objid = 'vector'::regtype AND d.deptype = 'e'").fetchone()[0]
            assert owner == "vector", "the column must be pgvector's type"
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
        with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
            for i, v in enumerate(base):
                copy.write_row((i, vecs.vector_text(v)))
        conn.execute("CREATE INDEX items_embedding ON items USING omen (embedding vector_l2_ops)")
        check = conn.execute("SELECT ok, problems FROM omen_check('items_embedding')").fetchone()
        assert check[0], f"omen_check: {check[1]}"
        conn.execute("SET enable_seqscan = off")
        plan = " ".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10",
            (vecs.vector_text(queries[0]),)).fetchall())
        assert "items_embedding" in plan, plan
        hits = 0
        for q, gt in zip(queries, truth):
            rows = conn.execute("SELECT id FROM items ORDER BY embedding <-> %s LIMIT %s",
                                (vecs.vector_text(q), K)).fetchall()
            hits += len({r[0] for r in rows} & set(gt[:K].tolist()))
        return hits / (K * len(queries))


def main() -> None:
    args = sys.argv[1:]
    pgvector_first = "--pgvector" in args
    folders = [Path(a) for a in args if a != "--pgvector"]
    failed = []
    for folder in folders:
        r = recall_for(folder, pgvector_first)
        where = " (on pgvector's vector column)" if pgvector_first else ""
        print(f"recall@{K} {folder.name}{where}: {r:.4f}")
        if r < THRESHOLD:
            failed.append(folder.name)
    assert not failed, f"recall below {THRESHOLD} on {failed}"


if __name__ == "__main__":
    main()
