"""Existing clients work unchanged: psycopg 3 with pgvector-python's register_vector writes
and reads numpy arrays through text and binary COPY and plain queries, and runs a distance
query, against omendb's own `vector` type (no pgvector installed).

Connects with the libpq environment (PGHOST, PGPORT, PGUSER), e.g. under pg_virtualenv.
"""

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

DIM = 16


def as_array(v) -> np.ndarray:
    """pgvector-python returns numpy arrays or, in newer releases, `Vector` objects."""
    return v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v)


def main() -> None:
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS omen_client")
        admin.execute("CREATE DATABASE omen_client")
    with psycopg.connect(dbname="omen_client", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION omendb")
        owner = conn.execute(
            "SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
            "WHERE d.objid = 'vector'::regtype AND d.deptype = 'e'").fetchone()[0]
        assert owner == "omendb", f"vector type should be omendb's here, is {owner}'s"
        register_vector(conn)
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({DIM}))")

        rng = np.random.default_rng(7)
        data = rng.standard_normal((400, DIM)).astype(np.float32)
        data[0] = np.float32(1e-7)  # values whose text form needs an exponent
        data[1] = np.float32(3.4028235e38)

        with conn.cursor() as cur:
            with cur.copy("COPY items (id, embedding) FROM STDIN") as copy:
                for i in range(200):
                    copy.write_row([i, data[i]])
            with cur.copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                for i in range(200, 400):
                    copy.write_row([i, data[i]])

        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                rows = cur.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
            assert len(rows) == 400
            for i, v in rows:
                v = as_array(v)
                assert v.dtype == np.float32, v.dtype
                assert np.array_equal(v, data[i]), f"row {i} differs (binary={binary})"
            print(f"read back 400 rows exactly ({'binary' if binary else 'text'} results)")

        with conn.cursor() as cur:
            with cur.copy("COPY items (id, embedding) TO STDOUT WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                out = {row[0]: as_array(row[1]) for row in copy.rows()}
        assert len(out) == 400 and all(np.array_equal(out[i], data[i]) for i in out)
        print("COPY TO ... (FORMAT BINARY) round-trips all 400 rows")

        with conn.cursor() as cur:
            with cur.copy("COPY items (id, embedding) TO STDOUT") as copy:
                text_rows = [bytes(r).decode() for r in copy]
        assert len(text_rows) == 400
        print("COPY TO ... (text) returned 400 rows")

        query = rng.standard_normal(DIM).astype(np.float32)
        got = [r[0] for r in conn.execute(
            "SELECT id FROM items ORDER BY embedding <-> %s LIMIT 10", (query,)).fetchall()]
        finite = np.all(np.isfinite(data.astype(np.float64)), axis=1)
        dist = np.linalg.norm(data.astype(np.float64) - query, axis=1)
        dist[~finite] = np.inf
        expected = list(np.argsort(dist, kind="stable")[:10])
        assert got == expected, f"nearest neighbours {got} != {expected}"
        d = conn.execute("SELECT %s::vector <-> %s::vector", (data[5], data[6])).fetchone()[0]
        assert abs(d - float(np.linalg.norm(data[5].astype(np.float64) - data[6]))) < 1e-4
        print("distance query returns numpy's exact top 10")
    print("client test passed")


if __name__ == "__main__":
    main()
