"""Recall@10 of the omen index through SQL, against the exact ground truth of the data sets
in ../shared/data, at default settings: at least 0.95 each. On PostgreSQL 15 with omendb's
own type, and on PostgreSQL 18 with the index built on pgvector's `vector` column.
"""

import pytest

from pgcluster import load, omen_check, phase, plan, recall, say, vec_text, vector_type_owner

THRESHOLD = 0.95
K = 10
SQL = f"SELECT id FROM items ORDER BY embedding <-> %s LIMIT {K}"


def recall_of(db, base, queries, truth, memory: str = "") -> float:
    """recall@K through the index built on `base`, under `memory` of maintenance_work_mem
    if given (rows past it are inserted one by one)."""
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
        with phase(f"COPY {len(base)} rows of {base.shape[1]} dimensions"):
            load(conn, "items", 0, base, column="embedding")
        if memory:
            conn.execute(f"SET maintenance_work_mem = '{memory}'")
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with phase(f"CREATE INDEX ... USING omen{f' under {memory}' if memory else ''}"):
            conn.execute("CREATE INDEX items_embedding ON items USING omen (embedding vector_l2_ops)")
        if memory:
            assert any("inserted one by one" in n for n in notices), f"the build fit in {memory}: {notices}"
            conn.execute("RESET maintenance_work_mem")
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


def test_recall_past_maintenance_work_mem(server, dataset):
    """A build past maintenance_work_mem (1 MB holds about 1,300 of siftsmall's 10,000 rows;
    the rest are inserted one by one, their prunes reading vectors from a cache) finds the
    same neighbours as one in memory."""
    r = recall_of(server.create_db("omen_recall_past_memory"), *dataset("siftsmall"), memory="1MB")
    say(f"recall@{K} siftsmall, built past 1 MB of maintenance_work_mem: {r:.4f}")
    assert r >= THRESHOLD, f"recall@{K} on siftsmall built past 1 MB is {r:.4f}, below {THRESHOLD}"


@pytest.mark.pg18
def test_recall_on_pgvector_column(pg18_server, dataset):
    db = pg18_server.create_db("omen_recall_pgvector", extensions=("vector", "omendb"))
    with db.connect() as conn:
        assert vector_type_owner(conn) == "vector", "the column must be pgvector's type"
    r = recall_of(db, *dataset("siftsmall"))
    say(f"recall@{K} siftsmall (on pgvector's vector column): {r:.4f}")
    assert r >= THRESHOLD, f"recall@{K} on siftsmall (pgvector's column) is {r:.4f}, below {THRESHOLD}"
