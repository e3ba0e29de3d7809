"""Deletes repaired in place: recall and size hold through churn.

On siftsmall (10,000 × 128): build the index, then ten rounds of deleting a random 10% of
the rows, inserting the same vectors back as new rows, and VACUUM. After each round,
recall@10 against the exact answer over the rows present must stay within 0.01 of the
fresh build's, and the index must stay within 1.2× of its first size. Then the same with
VACUUM running while other connections insert and query.

Usage: test_churn.py DATA_FOLDER   (libpq environment: PGHOST, PGPORT, ...)
"""

import sys
import threading
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import vecs  # noqa: E402

K = 10
ROUNDS = 10
N_QUERIES = 100


def recall(conn, queries, truth_ids) -> float:
    hits = 0
    for q, gt in zip(queries, truth_ids):
        rows = conn.execute("SELECT id FROM items ORDER BY embedding <-> %s LIMIT %s",
                            (vecs.vector_text(q), K)).fetchall()
        hits += len({r[0] for r in rows} & set(gt))
    return hits / (K * len(queries))


def exact_truth(base_by_id: dict, queries) -> list:
    ids = np.fromiter(base_by_id.keys(), dtype=np.int64)
    mat = np.stack([base_by_id[i] for i in ids]).astype(np.float64)
    out = []
    for q in queries:
        d = ((mat - q) ** 2).sum(axis=1)
        out.append(set(ids[np.argsort(d, kind="stable")[:K]].tolist()))
    return out


def setup(db: str, base) -> psycopg.Connection:
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db}")
    conn = psycopg.connect(dbname=db, autocommit=True)
    conn.execute("CREATE EXTENSION omendb")
    conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
    conn.execute("ALTER TABLE items SET (autovacuum_enabled = off)")
    with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
        for i, v in enumerate(base):
            copy.write_row((i, vecs.vector_text(v)))
    conn.execute("CREATE INDEX items_embedding ON items USING omen (embedding)")
    conn.execute("SET enable_seqscan = off")
    return conn


def churn_round(conn, rng, present: dict, next_id: int, base) -> int:
    """Deletes 10% of the present rows and inserts their vectors back under new ids."""
    ids = np.array(list(present.keys()))
    victims = rng.choice(ids, size=len(ids) // 10, replace=False)
    conn.execute("DELETE FROM items WHERE id = ANY(%s)", (victims.tolist(),))
    with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
        for v in victims:
            vec = present.pop(int(v))
            present[next_id] = vec
            copy.write_row((next_id, vecs.vector_text(vec)))
            next_id += 1
    return next_id


def check(conn, label: str) -> None:
    ok, problems = conn.execute("SELECT ok, problems FROM omen_check('items_embedding')").fetchone()
    assert ok, f"{label}: omen_check: {problems}"


def sequential(base, queries) -> None:
    conn = setup("omen_churn", base)
    present = {i: base[i] for i in range(len(base))}
    truth = exact_truth(present, queries)
    fresh = recall(conn, queries, truth)
    size0 = conn.execute("SELECT pg_relation_size('items_embedding')").fetchone()[0]
    print(f"fresh build: recall@10 {fresh:.4f}, index {size0 / 2**20:.1f} MiB")
    rng = np.random.default_rng(5)
    next_id = len(base)
    for r in range(1, ROUNDS + 1):
        next_id = churn_round(conn, rng, present, next_id, base)
        conn.execute("VACUUM items")
        check(conn, f"round {r}")
        rc = recall(conn, queries, [set(present_ids_for(t, present, base)) for t in truth])
        size = conn.execute("SELECT pg_relation_size('items_embedding')").fetchone()[0]
        info = conn.execute("SELECT nodes, deleted_nodes, free_slots, average_degree FROM omen_index_info('items_embedding')").fetchone()
        print(f"round {r}: recall@10 {rc:.4f}, index {size / 2**20:.1f} MiB ({size / size0:.2f}×), "
              f"nodes/deleted/free/degree {info}")
        assert rc >= fresh - 0.01, f"round {r}: recall {rc:.4f} fell more than 1 point below {fresh:.4f}"
        assert size <= 1.2 * size0, f"round {r}: index grew to {size / size0:.2f}× its first size"
    conn.close()


def present_ids_for(truth_set, present: dict, base) -> list:
    """The ground truth in terms of the current ids: a vector re-inserted under a new id
    is the same point, so map original ids to the ids now holding those vectors."""
    where = {}
    for pid, vec in present.items():
        where.setdefault(vec.tobytes(), pid)
    return [where[base[i].tobytes()] for i in truth_set]


def concurrent(base, queries) -> None:
    conn = setup("omen_churn_concurrent", base)
    present = {i: base[i] for i in range(len(base))}
    truth = exact_truth(present, queries)
    fresh = recall(conn, queries, truth)
    rng = np.random.default_rng(9)
    next_id = len(base)
    errors = []

    def reader(stop: threading.Event) -> None:
        try:
            with psycopg.connect(dbname="omen_churn_concurrent", autocommit=True) as c:
                c.execute("SET enable_seqscan = off")
                while not stop.is_set():
                    for q in queries[:20]:
                        n = len(c.execute("SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10",
                                          (vecs.vector_text(q),)).fetchall())
                        assert n == 10, f"a query returned {n} rows"
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for r in range(1, 4):
        next_id = churn_round(conn, rng, present, next_id, base)
        stop = threading.Event()
        readers = [threading.Thread(target=reader, args=(stop,)) for _ in range(2)]
        for t in readers:
            t.start()
        # Inserts run beside VACUUM on a connection of their own.
        extra = rng.choice(list(present.keys()), size=200, replace=False)

        def writer() -> None:
            try:
                with psycopg.connect(dbname="omen_churn_concurrent", autocommit=True) as c:
                    for i, pid in enumerate(extra):
                        c.execute("INSERT INTO items VALUES (%s, %s)",
                                  (10_000_000 + r * 1000 + i, vecs.vector_text(present[int(pid)] + 0.5)))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        w = threading.Thread(target=writer)
        w.start()
        conn.execute("VACUUM items")
        w.join()
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        conn.execute("DELETE FROM items WHERE id >= 10000000")
        conn.execute("VACUUM items")
        check(conn, f"concurrent round {r}")
        rc = recall(conn, queries, [set(present_ids_for(t, present, base)) for t in truth])
        print(f"concurrent round {r}: recall@10 {rc:.4f}")
        assert rc >= fresh - 0.01, f"concurrent round {r}: recall {rc:.4f} below {fresh:.4f} - 0.01"
    conn.close()


def main() -> None:
    folder = Path(sys.argv[1])
    base, queries, _ = vecs.load(folder)
    queries = queries[:N_QUERIES]
    sequential(base, queries)
    concurrent(base, queries)
    print("churn tests passed")


if __name__ == "__main__":
    main()
