"""Deletes repaired in place: recall and size hold through churn.

On siftsmall (10,000 × 128): build the index, then ten rounds of deleting a random 10% of
the rows, inserting the same vectors back as new rows, and VACUUM. After each round,
recall@10 against the exact answer over the rows present must stay within 0.01 of the
fresh build's, and the index must stay within 1.2× of its first size. Then the same with
VACUUM running while other connections insert and query.
"""

import threading

import numpy as np

from pgcluster import exact_topk, load, omen_check, phase, recall, say, vec_text

K = 10
ROUNDS = 10
N_QUERIES = 100
SQL = f"SELECT id FROM items ORDER BY embedding <-> %s LIMIT {K}"


def setup(db, base):
    """items(id, embedding) holding `base`, autovacuum off, an omen index; returns a
    connection with enable_seqscan off."""
    conn = db.connect()
    conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
    conn.execute("ALTER TABLE items SET (autovacuum_enabled = off)")
    with phase(f"{db.name}: load {len(base)} rows and build the index"):
        load(conn, "items", 0, base, column="embedding")
        conn.execute("CREATE INDEX items_embedding ON items USING omen (embedding)")
    conn.execute("SET enable_seqscan = off")
    return conn


def churn_round(conn, rng, present: dict, next_id: int) -> int:
    """Deletes 10% of the present rows and inserts their vectors back under new ids."""
    ids = np.array(list(present.keys()))
    victims = rng.choice(ids, size=len(ids) // 10, replace=False)
    conn.execute("DELETE FROM items WHERE id = ANY(%s)", (victims.tolist(),))
    with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
        for v in victims:
            vec = present.pop(int(v))
            present[next_id] = vec
            copy.write_row((next_id, vec_text(vec)))
            next_id += 1
    return next_id


def present_ids_for(truth: list, present: dict, base) -> list:
    """The ground truth in terms of the current ids: a vector re-inserted under a new id
    is the same point, so map original ids to the ids now holding those vectors."""
    where = {}
    for pid, vec in present.items():
        where.setdefault(vec.tobytes(), pid)
    return [[where[base[i].tobytes()] for i in t] for t in truth]


def sequential(db, base, queries) -> None:
    conn = setup(db, base)
    present = {i: base[i] for i in range(len(base))}
    truth = exact_topk(base, queries, K)
    fresh = recall(conn, SQL, queries, truth, K)
    size0 = conn.execute("SELECT pg_relation_size('items_embedding')").fetchone()[0]
    say(f"fresh build: recall@10 {fresh:.4f}, index {size0 / 2**20:.1f} MiB")
    rng = np.random.default_rng(5)
    next_id = len(base)
    for r in range(1, ROUNDS + 1):
        next_id = churn_round(conn, rng, present, next_id)
        conn.execute("VACUUM items")
        omen_check(conn, "items_embedding")
        rc = recall(conn, SQL, queries, present_ids_for(truth, present, base), K)
        size = conn.execute("SELECT pg_relation_size('items_embedding')").fetchone()[0]
        info = conn.execute(
            "SELECT nodes, deleted_nodes, free_slots, average_degree FROM omen_index_info('items_embedding')"
        ).fetchone()
        say(
            f"round {r}: recall@10 {rc:.4f}, index {size / 2**20:.1f} MiB ({size / size0:.2f}×), "
            f"nodes/deleted/free/degree {info}"
        )
        assert rc >= fresh - 0.01, f"round {r}: recall {rc:.4f} fell more than 1 point below {fresh:.4f}"
        assert size <= 1.2 * size0, f"round {r}: index grew to {size / size0:.2f}× its first size"
    conn.close()


def concurrent(db, base, queries) -> None:
    conn = setup(db, base)
    present = {i: base[i] for i in range(len(base))}
    truth = exact_topk(base, queries, K)
    fresh = recall(conn, SQL, queries, truth, K)
    rng = np.random.default_rng(9)
    next_id = len(base)
    errors = []

    def reader(stop: threading.Event) -> None:
        try:
            with db.connect() as c:
                c.execute("SET enable_seqscan = off")
                while not stop.is_set():
                    for q in queries[:20]:
                        n = len(c.execute(SQL, (vec_text(q),)).fetchall())
                        assert n == 10, f"a query returned {n} rows"
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(e)

    def writer(r: int, extra) -> None:
        try:
            with db.connect() as c:
                for i, pid in enumerate(extra):
                    c.execute(
                        "INSERT INTO items VALUES (%s, %s)",
                        (10_000_000 + r * 1000 + i, vec_text(present[int(pid)] + 0.5)),
                    )
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append(e)

    for r in range(1, 4):
        next_id = churn_round(conn, rng, present, next_id)
        stop = threading.Event()
        readers = [threading.Thread(target=reader, args=(stop,)) for _ in range(2)]
        for t in readers:
            t.start()
        # Inserts run beside VACUUM on a connection of their own.
        extra = rng.choice(list(present.keys()), size=200, replace=False)
        w = threading.Thread(target=writer, args=(r, extra))
        w.start()
        conn.execute("VACUUM items")
        w.join()
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        conn.execute("DELETE FROM items WHERE id >= 10000000")
        conn.execute("VACUUM items")
        omen_check(conn, "items_embedding")
        rc = recall(conn, SQL, queries, present_ids_for(truth, present, base), K)
        say(f"concurrent round {r}: recall@10 {rc:.4f}")
        assert rc >= fresh - 0.01, f"concurrent round {r}: recall {rc:.4f} below {fresh:.4f} - 0.01"
    conn.close()


def test_churn(server, dataset):
    base, queries, _ = dataset("siftsmall")
    queries = queries[:N_QUERIES]
    with phase(f"ten rounds of delete 10% / insert 10% / VACUUM on {len(base)} rows"):
        sequential(server.create_db("omen_churn"), base, queries)
    with phase("three rounds with VACUUM beside inserts and queries"):
        concurrent(server.create_db("omen_churn_concurrent"), base, queries)
