"""The query path of layout 3: vectors past a page (3,072 and 16,000 dimensions) and rows
returned in exact distance order, checked against distances recomputed in SQL.
"""

import itertools

import numpy as np

from pgcluster import exact_topk, load, omen_check, phase, plan, recall, say, vec_text

K = 10


def side_by_side(images: np.ndarray, count: int, dims: int, rng) -> np.ndarray:
    """`count` vectors of `dims` dimensions, each made of consecutive fashion-mnist images
    side by side (cut to `dims`), scaled to [0, 1], with a little noise."""
    per = -(-dims // images.shape[1])
    rows = images[: count * per].reshape(count, per * images.shape[1])[:, :dims] / 255.0
    return (rows + rng.normal(0, 0.01, rows.shape)).astype(np.float32)


def test_3072_dimensions_recall(server, dataset):
    base, queries, _ = dataset("fashion-mnist-784-euclidean")
    rng = np.random.default_rng(7)
    rows = side_by_side(base, 5000, 3072, rng)
    probes = side_by_side(queries, 100, 3072, rng)
    truth = exact_topk(rows, probes, K)
    db = server.create_db("omen_3072")
    with db.connect() as conn:
        conn.execute("CREATE TABLE items (id int, v vector(3072))")
        with phase("COPY 5000 rows of 3072 dimensions"):
            load(conn, "items", 0, rows)
        conn.execute("SET maintenance_work_mem = '512MB'")
        with phase("CREATE INDEX ... USING omen (3072 dimensions: vector records span pages)"):
            conn.execute("CREATE INDEX items_v ON items USING omen (v)")
        omen_check(conn, "items_v")
        # 5,000 TOASTed rows: the planner does not count the detoasting a sort costs.
        conn.execute("SET enable_seqscan = off")
        sql = f"SELECT id FROM items ORDER BY v <-> %s LIMIT {K}"
        assert "items_v" in plan(conn, sql, (vec_text(probes[0]),))
        r = recall(conn, sql, probes, truth, K)
    say(f"recall@{K} at 3072 dimensions: {r:.4f}")
    assert r >= 0.95, f"recall@{K} at 3072 dimensions is {r:.4f}"


def test_16000_dimensions_build_insert_self_match(server):
    # Low intrinsic dimension, as embeddings have (32 latent factors plus noise): i.i.d.
    # Gaussian vectors of 16,000 dimensions are all about equally far apart, which no
    # graph index navigates.
    rng = np.random.default_rng(11)
    latent = rng.normal(0, 1, (260, 32)) @ rng.normal(0, 1, (32, 16000))
    rows = (latent + rng.normal(0, 0.5, latent.shape)).astype(np.float32)
    db = server.create_db("omen_16000")
    with db.connect() as conn:
        conn.execute("CREATE TABLE items (id int, v vector(16000))")
        load(conn, "items", 0, rows[:200])
        conn.execute("SET maintenance_work_mem = '256MB'")
        with phase("CREATE INDEX on 200 rows of 16,000 dimensions"):
            conn.execute("CREATE INDEX items_v ON items USING omen (v)")
        with phase("60 inserts of 16,000 dimensions (in place: past a buffer page)"):
            load(conn, "items", 200, rows[200:])
        check = omen_check(conn, "items_v")
        assert check["nodes"] == 260 and check["table_rows"] == 260, check
        conn.execute("SET enable_seqscan = off")
        for i in range(0, 260, 13):
            got = conn.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 1", (vec_text(rows[i]),)).fetchone()[0]
            assert got == i, f"row {i}'s nearest neighbour through the index is {got}"


def test_rows_come_back_in_exact_order(server, dataset):
    """For 100 queries, the first round's rows (LIMIT up to omen.search_list_size) are in
    non-decreasing exact distance, recomputed in SQL for each returned row, for every
    operator class; the buffered rows and the graph's rows interleave in that order too."""
    base, queries, _ = dataset("siftsmall")
    db = server.create_db("omen_exact_order")
    with db.connect() as conn:
        conn.execute("CREATE TABLE items (id int, v vector(128))")
        load(conn, "items", 0, base[:8000])
        for ops, op in (("vector_l2_ops", "<->"), ("vector_cosine_ops", "<=>"), ("vector_ip_ops", "<#>")):
            conn.execute(f"CREATE INDEX items_v ON items USING omen (v {ops}) WITH (buffer_threshold = 100000)")
            if ops == "vector_l2_ops":
                # Rows only the insert buffer holds, to interleave with the graph's.
                load(conn, "items", 8000, base[8000:9000])
            conn.execute("SET enable_seqscan = off")
            for limit in (10, 40):
                sql = (
                    f"SELECT id, v {op} %s::vector AS d FROM "
                    f"(SELECT id, v FROM items ORDER BY v {op} %s::vector LIMIT {limit}) s"
                )
                explained = plan(conn, sql, (vec_text(queries[0]),) * 2)
                assert "items_v" in explained, explained
                for q in queries[:100]:
                    t = vec_text(q)
                    d = [r[1] for r in conn.execute(sql, (t, t))]
                    assert len(d) == limit
                    assert all(a <= b for a, b in itertools.pairwise(d)), f"{ops}, LIMIT {limit}: out of order: {d}"
            conn.execute("RESET enable_seqscan")
            conn.execute("DROP INDEX items_v")


def unit_vectors(conn, index: str) -> bool:
    """Whether `index` stores unit vectors (omen_index_info's JSON; not one of its columns)."""
    return conn.execute(
        "SELECT (omen_index_info_json(%s::regclass)::text::json->>'unit_vectors')::boolean", (index,)
    ).fetchone()[0]


def test_cosine_ranks_rows_of_any_length(server, dataset):
    """A cosine index stores its vectors scaled to unit length and ranks by 1 - a·b: rows
    (and queries) whose lengths span four orders of magnitude come back in exact cosine
    order, from the graph (build) and from the insert buffer alike, before and after the
    buffer is merged; an L2 index keeps its vectors as they are."""
    base, queries, _ = dataset("siftsmall")
    rng = np.random.default_rng(5)
    rows = (base[:7000] * rng.uniform(0.01, 100, (7000, 1))).astype(np.float32)
    probes = (queries[:50] * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    truth = exact_topk(unit, probes / np.linalg.norm(probes, axis=1, keepdims=True), K)
    db = server.create_db("omen_cosine_lengths")
    with db.connect() as conn:
        conn.execute("CREATE TABLE items (id int, v vector(128))")
        load(conn, "items", 0, rows[:6000])
        conn.execute("CREATE INDEX l2 ON items USING omen (v)")
        assert unit_vectors(conn, "l2") is False
        conn.execute("DROP INDEX l2")
        conn.execute("CREATE INDEX items_v ON items USING omen (v vector_cosine_ops) WITH (buffer_threshold = 100000)")
        assert unit_vectors(conn, "items_v") is True
        load(conn, "items", 6000, rows[6000:])
        assert conn.execute("SELECT buffered_entries FROM omen_index_info('items_v')").fetchone()[0] == 1000
        conn.execute("SET enable_seqscan = off")
        sql = f"SELECT id, v <=> %s::vector AS d FROM (SELECT id, v FROM items ORDER BY v <=> %s::vector LIMIT {K}) s"
        assert "items_v" in plan(conn, sql, (vec_text(probes[0]),) * 2)
        for stage in ("buffered", "merged"):
            hits = 0
            for q, gt in zip(probes, truth, strict=True):
                t = vec_text(q)
                got = conn.execute(sql, (t, t)).fetchall()
                d = [r[1] for r in got]
                assert all(a <= b + 1e-6 for a, b in itertools.pairwise(d)), f"{stage}: out of order: {d}"
                hits += len({r[0] for r in got} & set(gt))
            r = hits / (K * len(probes))
            say(f"cosine over rows of any length, {stage}: recall@{K} {r:.4f}")
            assert r >= 0.95, f"{stage}: recall@{K} {r:.4f}"
            if stage == "buffered":
                conn.execute("SELECT omen_flush('items_v')")
                check = omen_check(conn, "items_v")
                assert check["nodes"] == 7000 and check["buffered"] == 0, check
