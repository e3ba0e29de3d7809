"""Existing clients work unchanged: psycopg 3 with pgvector-python's register_vector writes
and reads numpy arrays through text and binary COPY and plain queries, and runs a distance
query, against omendb's own `vector` type (no pgvector installed).
"""

import numpy as np
import pytest
from pgvector.psycopg import register_vector

from pgcluster import exact_topk, say, vector_type_owner

DIM = 16
ROWS = 400


def as_array(v) -> np.ndarray:
    """pgvector-python returns numpy arrays or, in newer releases, `Vector` objects."""
    return v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v)


@pytest.fixture(scope="module")
def items(server):
    """Database omen_client: items(id, embedding vector(16)) holding `data`, the first half
    written by a text COPY, the second by a binary COPY. Yields (connection, data)."""
    db = server.create_db("omen_client")
    with db.connect() as conn:
        register_vector(conn)
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({DIM}))")
        rng = np.random.default_rng(7)
        data = rng.standard_normal((ROWS, DIM)).astype(np.float32)
        data[0] = np.float32(1e-7)  # values whose text form needs an exponent
        data[1] = np.float32(3.4028235e38)
        with conn.cursor() as cur:
            with cur.copy("COPY items (id, embedding) FROM STDIN") as copy:
                for i in range(ROWS // 2):
                    copy.write_row([i, data[i]])
            with cur.copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                for i in range(ROWS // 2, ROWS):
                    copy.write_row([i, data[i]])
        say(f"{ROWS} rows written: {ROWS // 2} by text COPY, {ROWS // 2} by binary COPY")
        yield conn, data


def test_vector_type_is_omendbs(items):
    conn, _ = items
    owner = vector_type_owner(conn)
    assert owner == "omendb", f"vector type should be omendb's here, is {owner}'s"


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_read_back_exactly(items, binary):
    conn, data = items
    with conn.cursor(binary=binary) as cur:
        rows = cur.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
    assert len(rows) == ROWS
    for i, v in rows:
        v = as_array(v)
        assert v.dtype == np.float32, v.dtype
        assert np.array_equal(v, data[i]), f"row {i} differs (binary={binary})"
    say(f"read back {ROWS} rows exactly ({'binary' if binary else 'text'} results)")


def test_copy_to_binary_round_trips(items):
    conn, data = items
    with conn.cursor() as cur, cur.copy("COPY items (id, embedding) TO STDOUT WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "vector"])
        out = {row[0]: as_array(row[1]) for row in copy.rows()}
    assert len(out) == ROWS and all(np.array_equal(out[i], data[i]) for i in out)


def test_copy_to_text(items):
    conn, _ = items
    with conn.cursor() as cur, cur.copy("COPY items (id, embedding) TO STDOUT") as copy:
        text_rows = [bytes(r).decode() for r in copy]
    assert len(text_rows) == ROWS


def test_distance_query_is_exact(items):
    conn, data = items
    rng = np.random.default_rng(8)
    query = rng.standard_normal(DIM).astype(np.float32)
    got = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10", (query,))]
    expected = exact_topk(data, [query], 10)[0]
    assert got == expected, f"nearest neighbours {got} != {expected}"
    d = conn.execute("SELECT %s::vector <-> %s::vector", (data[5], data[6])).fetchone()[0]
    assert abs(d - float(np.linalg.norm(data[5].astype(np.float64) - data[6]))) < 1e-4
