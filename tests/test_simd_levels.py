"""omen's code kernels at each SIMD level (crates/omen-core/src/simd.rs): the CPU's own,
detected at run time, and the lower ones a server gets with OMEN_SIMD in its environment,
as it would on a CPU without them (PostgreSQL 15).

1. Detection: a server with no OMEN_SIMD reports, in omen_index_info_json's "simd", the
   highest level /proc/cpuinfo's flags allow (avx512: avx512f, avx512bw, avx2 and fma;
   avx2: avx2 and fma; else portable).
2. For OMEN_SIMD = portable and avx2 (each capped at the CPU's level): the server reports
   that level, and its index answers as the default one does:
   - siftsmall (128 dimensions: 4-bit codes, each estimated on its own) built and queried
     at default settings: recall@10 ≥ 0.95;
   - fmnistsmall (784 dimensions: 1-bit codes, which the scan estimates 32 at a time with
     FastScan): 500 rows in the graph and 500 in the insert buffer; each of 50 buffered
     rows is its own nearest neighbour, and for 50 queries the LIMIT 10 rows are the exact
     top 10 over both.
"""

from pathlib import Path

import numpy as np
import pytest
from test_insert_buffer import NO_MERGE
from test_recall import THRESHOLD, recall_of

from pgcluster import exact_topk, load, say, vec_text

LEVELS = ["portable", "avx2", "avx512"]


def cpu_level() -> str:
    """The highest level the CPU's flags allow, as omen_core::simd::detected decides."""
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512bw", "avx2", "fma"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "portable"


def simd_of(db) -> str:
    """The level the server's backends run, as omen_index_info_json reports it."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (v vector(2))")
        conn.execute("CREATE INDEX IF NOT EXISTS probe_v ON probe USING omen (v)")
        return conn.execute("SELECT omen_index_info_json('probe_v')::text::json->>'simd'").fetchone()[0]


def test_detected_level(server):
    got = simd_of(server.create_db("omen_simd_detected"))
    say(f"the server's backends run the {got} kernels; /proc/cpuinfo allows {cpu_level()}")
    assert got == cpu_level(), f"omen runs {got}, the CPU has {cpu_level()}"


@pytest.mark.parametrize("asked", ["portable", "avx2"])
def test_lower_level_answers_alike(servers, dataset, asked):
    expected = min(asked, cpu_level(), key=LEVELS.index)
    server = servers.start(f"simd-{asked}", environ={"OMEN_SIMD": asked})
    got = simd_of(server.create_db("omen_simd_probe"))
    assert got == expected, f"OMEN_SIMD={asked} on a CPU with {cpu_level()}: omen runs {got}"

    r = recall_of(server.create_db("omen_simd_sift"), *dataset("siftsmall"))
    say(f"{got} kernels: recall@10 siftsmall {r:.4f}")
    assert r >= THRESHOLD, f"{got} kernels: recall@10 on siftsmall is {r:.4f}, below {THRESHOLD}"

    base, queries, _ = dataset("fmnistsmall")
    half = len(base) // 2
    db = server.create_db("omen_simd_buffer")
    with db.connect() as conn:
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, v vector({base.shape[1]}))")
        load(conn, "items", 0, base[:half])
        conn.execute(f"CREATE INDEX items_v ON items USING omen (v) WITH ({NO_MERGE})")
        load(conn, "items", half, base[half:])
        conn.execute("SET enable_seqscan = off")
        # A list as large as the graph: the graph's part is searched (nearly) exhaustively,
        # so the comparison with the exact top 10 tests the buffer's part of the scan.
        conn.execute(f"SET omen.search_list_size = {half}")
        for i in range(half, len(base), 10):
            found = conn.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 1", (vec_text(base[i]),)).fetchone()
            assert found[0] == i, f"{got} kernels: buffered row {i} is not its own nearest neighbour ({found[0]})"
        truth = exact_topk(base, queries[:50], 10)
        for q, t in zip(queries[:50], truth, strict=True):
            ids = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 10", (vec_text(q),))]
            # Pixel rows tie at integer distances: the distances must match, in order.
            dist = [float(np.linalg.norm(base[i].astype(np.float64) - q)) for i in ids]
            exact = [float(np.linalg.norm(base[i].astype(np.float64) - q)) for i in t]
            assert np.allclose(dist, exact, rtol=1e-5), f"{got} kernels: {ids} at {dist}, exact {t} at {exact}"
    say(f"{got} kernels: 50 buffered rows their own nearest, 50 queries in exact order")
