"""Recall@10 of the omen index through SQL, against the exact ground truth of the data sets
in ../shared/data, at default settings: at least 0.95 each. On PostgreSQL 15 with omendb's
own type, and on PostgreSQL 18 with the index built on pgvector's `vector` column.
"""

import pytest

from pgcluster import load, omen_check, phase, plan, recall, say, vec_text, vector_type_owner

THRESHOLD = 0.95
K = 10
SQL = f"SELECT id FROM items ORDER BY embedding <-> %s LIMIT {K}"


def recall_of(db, base, queries, truth) -> float:
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
        with phase(f"COPY {len(base)} rows of {base.shape[1]} dimensions"):
            load(conn, "items", 0, base, column="embedding")
        with phase("CREATE INDEX ... USING omen"):
            conn.execute("CREATE INDEX items_embedding ON items USING omen (embedding vector_l2_ops)")
        omen_check(conn, "items_embedding")
        conn.execute("SET enable_seqscan = off")
        explained = plan(conn, SQL, (vec_text(queries[0]),))
        assert "items_embedding" in explained, explained
        with phase(f"{len(queries)} queries"):
            return recall(conn, SQL, queries, [gt[:K].tolist() for gt in truth], K)


@pytest.mark.parametrize("name", ["siftsmall", "bigann10k", "fmnistsmall"])
def test_recall(server, dataset, name):
    r = recall_of(server.create_db(f"omen_recall_{name}"), *dataset(name))
    say(f"recall@{K} {name}: {r:.4f}")
    assert r >= THRESHOLD, f"recall@{K} on {name} is {r:.4f}, below {THRESHOLD}"


@pytest.mark.pg18
def test_recall_on_pgvector_column(pg18_server, dataset):
    db = pg18_server.create_db("omen_recall_pgvector", extensions=("vector", "omendb"))
    with db.connect() as conn:
        assert vector_type_owner(conn) == "vector", "the column must be pgvector's type"
    r = recall_of(db, *dataset("siftsmall"))
    say(f"recall@{K} siftsmall (on pgvector's vector column): {r:.4f}")
    assert r >= THRESHOLD, f"recall@{K} on siftsmall (pgvector's column) is {r:.4f}, below {THRESHOLD}"
