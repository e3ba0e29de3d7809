"""Side-by-side benchmark: omen vs pgvector HNSW, same rows, same server, same run.

Loads a data set from ../shared/data into two databases of one PostgreSQL 18 + pgvector
server (bench/run.sh starts it), builds each engine's index, and measures build time, index
size, and recall@10 with queries per second (one client, sequential, prepared statements)
for a sweep of omen.search_list_size and hnsw.ef_search, beside an exact sequential scan.
Recall counts ties as hits (`Judge`). Writes bench/results/<dataset>.md and .png.

Usage: run.py DATA_FOLDER [--queries N]
"""

import itertools
import statistics
import time

import numpy as np
import psycopg

from common import RESULTS, data_from_args, fresh_db, metric_of, phase, say, vecs

K = 10
# The data set's metric: cosine for sentence embeddings, L2 otherwise (set in main).
OPS, OP = "vector_l2_ops", "<->"
JUDGE = None  # the Judge of the data set, set by main()
OMEN_SWEEP = [12, 16, 20, 24, 28, 32, 40, 48, 64, 100, 160]
# Rounds over every setting (the median of each setting's passes is reported).
ROUNDS = 3
HNSW_SWEEP = [10, 20, 40, 80, 120, 160, 240, 320]


def load(conn: psycopg.Connection, base: np.ndarray) -> None:
    with phase(f"{conn.info.dbname}: COPY {len(base)} x {base.shape[1]}, VACUUM ANALYZE"):
        conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]}))")
        with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
            for i, v in enumerate(base):
                copy.write_row((i, vecs.vector_text(v)))
        conn.execute("VACUUM ANALYZE items")


def timed(conn: psycopg.Connection, sql: str) -> float:
    t0 = time.perf_counter()
    with phase(f"{conn.info.dbname}: {sql}"):
        conn.execute(sql)
    return time.perf_counter() - t0


class Judge:
    """Recall that counts ties: a returned row is a hit when its distance to the query is at
    most the k-th true neighbour's (within float rounding). Equal distances are common: the
    integer coordinates of SIFT and Fashion-MNIST, and the exact copies of a sentence that
    text collections hold; comparing ids alone would count a tied row as a miss."""

    def __init__(self, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, ops: str):
        self.base, self.queries, self.ops = base, queries, ops
        self.kth = [self.distances(i, t[K - 1 : K])[0] for i, t in enumerate(truth)]

    def distances(self, i: int, ids) -> np.ndarray:
        x, q = np.asarray(self.base[np.asarray(ids, dtype=np.int64)], dtype=np.float64), self.queries[i]
        q = np.asarray(q, dtype=np.float64)
        if self.ops == "vector_cosine_ops":
            return 1.0 - x @ q / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(q), 1e-30)
        if self.ops == "vector_ip_ops":
            return -(x @ q)
        return ((x - q) ** 2).sum(axis=1)

    def hits(self, i: int, found: list[int]) -> int:
        if not found:
            return 0
        kth = self.kth[i]
        return int((self.distances(i, found) <= kth + 1e-5 * max(1.0, abs(kth))).sum())


def run_queries(conn, texts, truth, setting_sql: str | None, repeats: int = 3, prepare: bool = True):
    """recall@10 and the median queries/s over `repeats` passes."""
    started = time.perf_counter()
    if setting_sql:
        conn.execute(setting_sql)
    sql = f"SELECT id FROM items ORDER BY embedding {OP} %s::vector LIMIT 10"
    hits = 0
    rates = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        found = []
        for q in texts:
            found.append([r[0] for r in conn.execute(sql, (q,), prepare=prepare).fetchall()])
        rates.append(len(texts) / (time.perf_counter() - t0))
        if rep == 0:
            hits = sum(JUDGE.hits(i, f) for i, f in enumerate(found))
    recall, qps = hits / (K * len(texts)), statistics.median(rates)
    say(
        f"{conn.info.dbname}, {setting_sql or 'sequential scan'}: {repeats} x {len(texts)} queries, "
        f"recall@{K} {recall:.4f}, {qps:,.0f} queries/s ({time.perf_counter() - started:.1f} s)"
    )
    return recall, qps


def plan_uses(conn, index: str, q: str) -> bool:
    plan = " ".join(
        r[0]
        for r in conn.execute(
            f"EXPLAIN SELECT id FROM items ORDER BY embedding {OP} %s::vector LIMIT 10", (q,)
        ).fetchall()
    )
    return index in plan


def main() -> None:
    global OPS, OP, JUDGE
    folder, base, queries, truth, texts = data_from_args()
    name = folder.name
    OPS, OP = metric_of(name)
    JUDGE = Judge(base, queries, truth, OPS)
    rows = []  # (engine, setting, recall, qps)

    fresh_db("bench_pgvector")
    fresh_db("bench_omen")
    pv = psycopg.connect(dbname="bench_pgvector", autocommit=True)
    om = psycopg.connect(dbname="bench_omen", autocommit=True)
    pv.execute("CREATE EXTENSION vector")
    om.execute("CREATE EXTENSION omendb")
    for conn in (pv, om):
        load(conn, base)

    builds = {}
    builds["pgvector"] = timed(
        pv, f"CREATE INDEX items_hnsw ON items USING hnsw (embedding {OPS}) WITH (m = 16, ef_construction = 64)"
    )
    builds["omen"] = timed(om, f"CREATE INDEX items_omen ON items USING omen (embedding {OPS})")
    sizes = {
        "pgvector": pv.execute("SELECT pg_relation_size('items_hnsw')").fetchone()[0],
        "omen": om.execute("SELECT pg_relation_size('items_omen')").fetchone()[0],
    }
    for engine in builds:
        say(f"{engine}: build {builds[engine]:.1f} s, index {sizes[engine] / 2**20:.0f} MiB")
    assert plan_uses(pv, "items_hnsw", texts[0]) and plan_uses(om, "items_omen", texts[0])

    # Warm both: every index page read once before measuring.
    run_queries(pv, texts[:200], truth[:200], "SET hnsw.ef_search = 40", repeats=1)
    run_queries(om, texts[:200], truth[:200], "SET omen.search_list_size = 40", repeats=1)

    # The two sweeps are interleaved, and so are their repeats: three rounds over every
    # setting of both engines, each setting's median taken over the rounds, so that a slow
    # minute of this noisy machine falls on one pass of every setting, not on three passes
    # of one.
    settings = []
    for ef, size in itertools.zip_longest(HNSW_SWEEP, OMEN_SWEEP):
        if ef is not None:
            settings.append(("pgvector hnsw", f"ef_search={ef}", pv, f"SET hnsw.ef_search = {ef}"))
        if size is not None:
            settings.append(("omen", f"search_list_size={size}", om, f"SET omen.search_list_size = {size}"))
    passes: dict[str, list[tuple[float, float]]] = {label: [] for _, label, _, _ in settings}
    for _ in range(ROUNDS):
        for _, label, conn, sql in settings:
            passes[label].append(run_queries(conn, texts, truth, sql, repeats=1))
    for engine, label, _, _ in settings:
        rows.append((engine, label, passes[label][0][0], statistics.median(q for _, q in passes[label])))
    # The floor: the same client, statement shape and vector parameter, ten rows through the
    # primary key and no distance at all (what every query above pays besides its search).
    floor_sql = "SELECT id FROM items WHERE %s::vector IS NOT NULL ORDER BY id LIMIT 10"
    floor_rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for q in texts:
            om.execute(floor_sql, (q,), prepare=True).fetchall()
        floor_rates.append(len(texts) / (time.perf_counter() - t0))
    floor_qps = statistics.median(floor_rates)
    say(f"floor: {floor_qps:,.0f} queries/s ({1e6 / floor_qps:.0f} µs a query)")
    exact_n = min(50, len(texts))
    om.execute("SET enable_indexscan = off")
    # Not prepared: a prepared statement would keep its plan through the index.
    r, qps = run_queries(om, texts[:exact_n], truth[:exact_n], None, repeats=1, prepare=False)
    om.execute("RESET enable_indexscan")
    rows.append(("exact (seq scan)", f"{exact_n} queries", r, qps))

    RESULTS.mkdir(exist_ok=True)
    md = [
        f"### {name}: {len(base):,} × {base.shape[1]}, {len(texts):,} queries, k = {K}",
        "",
        "| engine | build (s) | index size (MiB) |",
        "|---|---:|---:|",
    ]
    for engine, label in (
        ("pgvector", "pgvector HNSW (m = 16, ef_construction = 64)"),
        ("omen", "omen (defaults: R = 32, L = 64, α = 1.2)"),
    ):
        md.append(f"| {label} | {builds[engine]:.1f} | {sizes[engine] / 2**20:.0f} |")
    md += ["", "| engine | setting | recall@10 | queries/s |", "|---|---|---:|---:|"]
    for engine, setting, r, qps in rows:
        md.append(f"| {engine} | {setting} | {r:.4f} | {qps:,.0f} |")

    def best_qps(engine: str, floor: float) -> float:
        return max((q for e, _, r, q in rows if e == engine and r >= floor), default=0.0)

    md.append(f"| floor: 10 rows by primary key, same client and parameter | | | {floor_qps:,.0f} |")

    def search_us(qps: float) -> float:
        """Microseconds a query spends past the floor."""
        return max(1e6 / qps - 1e6 / floor_qps, 1.0)

    md.append("")
    for floor in (0.95, 0.99):
        o, p = best_qps("omen", floor), best_qps("pgvector hnsw", floor)
        ratio = f"{o / p:.2f}×" if p else "n/a"
        past = f"; time past the floor {search_us(p) / search_us(o):.2f}× shorter" if o and p else ""
        md.append(
            f"- best queries/s at recall@10 ≥ {floor}: omen {o:,.0f}, pgvector {p:,.0f} (omen/pgvector {ratio}{past})"
        )
    md.append(
        f"- build time omen/pgvector: {builds['omen'] / builds['pgvector']:.2f}×; "
        f"index size omen/pgvector: {sizes['omen'] / sizes['pgvector']:.2f}×"
    )
    out = RESULTS / f"{name}.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine, marker in (("omen", "o"), ("pgvector hnsw", "s")):
        pts = [(r, q) for e, _, r, q in rows if e == engine]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=engine)
    ex = [(r, q) for e, _, r, q in rows if e.startswith("exact")]
    ax.scatter([p[0] for p in ex], [p[1] for p in ex], marker="x", color="gray", label="exact seq scan")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (1 client)")
    ax.set_yscale("log")
    ax.set_title(f"{name}: recall vs throughput, one PostgreSQL 18 server")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print(f"wrote {out} and {RESULTS / (name + '.png')}")


if __name__ == "__main__":
    main()
