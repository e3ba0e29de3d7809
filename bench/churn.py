"""Churn benchmark: ten rounds of deleting 10% of the rows, inserting the same vectors back
as new rows, and VACUUM; after each round recall@10 and queries/s at default settings,
the VACUUM time and the index size. Writes bench/results/<dataset>-churn.md and .png.

Usage: churn.py DATA_FOLDER [--queries N]   (libpq environment; bench/run.sh --churn starts
the server)
"""

import time

import numpy as np
import psycopg

from common import RESULTS, data_from_args, fresh_db, phase, say, vecs

K = 10
ROUNDS = 10


def main() -> None:
    folder, base, _, truth, texts = data_from_args()
    fresh_db("bench_churn")
    conn = psycopg.connect(dbname="bench_churn", autocommit=True)
    conn.execute("CREATE EXTENSION omendb")
    conn.execute(
        f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]})) WITH (autovacuum_enabled = off)"
    )
    with (
        phase(f"COPY {len(base)} x {base.shape[1]}"),
        conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy,
    ):
        for i, v in enumerate(base):
            copy.write_row((i, vecs.vector_text(v)))
    t0 = time.perf_counter()
    with phase("CREATE INDEX ... USING omen"):
        conn.execute("CREATE INDEX items_omen ON items USING omen (embedding vector_l2_ops)")
    build = time.perf_counter() - t0
    holder = np.arange(len(base))  # holder[original id] = id of the row holding that vector now
    rng = np.random.default_rng(1)
    next_id = len(base)
    sql = "SELECT id FROM items ORDER BY embedding <-> %s::vector LIMIT 10"

    def measure():
        t0 = time.perf_counter()
        hits = 0
        for q, gt in zip(texts, truth, strict=True):
            got = {r[0] for r in conn.execute(sql, (q,), prepare=True).fetchall()}
            hits += len(got & set(holder[gt[:K]].tolist()))
        return hits / (K * len(texts)), len(texts) / (time.perf_counter() - t0)

    rows = []
    r0, q0 = measure()
    size0 = conn.execute("SELECT pg_relation_size('items_omen')").fetchone()[0]
    rows.append((0, r0, q0, 0.0, size0))
    say(f"fresh build ({build:.1f} s): recall@{K} {r0:.4f}, {q0:,.0f} queries/s, index {size0 / 2**20:.0f} MiB")
    for rnd in range(1, ROUNDS + 1):
        round_started = time.perf_counter()
        victims = rng.choice(len(base), size=len(base) // 10, replace=False)
        conn.execute("DELETE FROM items WHERE id = ANY(%s)", (holder[victims].tolist(),))
        with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
            for v in victims:
                copy.write_row((next_id, vecs.vector_text(base[v])))
                holder[v] = next_id
                next_id += 1
        t0 = time.perf_counter()
        conn.execute("VACUUM items")
        vac = time.perf_counter() - t0
        r, q = measure()
        size = conn.execute("SELECT pg_relation_size('items_omen')").fetchone()[0]
        rows.append((rnd, r, q, vac, size))
        say(
            f"round {rnd} ({time.perf_counter() - round_started:.1f} s): VACUUM {vac:.1f} s, recall@{K} {r:.4f}, "
            f"{q:,.0f} queries/s, index {size / 2**20:.0f} MiB ({size / size0:.2f}x)"
        )

    RESULTS.mkdir(exist_ok=True)
    md = [
        f"### {folder.name} churn: 10 rounds of delete 10% / insert 10% / VACUUM "
        f"({len(base):,} rows, {len(texts):,} queries, omen.search_list_size = 40)",
        "",
        "| round | recall@10 | queries/s | VACUUM (s) | index (MiB) | size vs first |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for rnd, r, q, vac, size in rows:
        md.append(f"| {rnd} | {r:.4f} | {q:,.0f} | {vac:.1f} | {size / 2**20:.0f} | {size / size0:.2f}× |")
    (RESULTS / f"{folder.name}-churn.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    xs = [r[0] for r in rows]
    ax[0].plot(xs, [r[1] for r in rows], marker="o")
    ax[0].set_title("recall@10")
    ax[1].plot(xs[1:], [r[3] for r in rows[1:]], marker="o")
    ax[1].set_title("VACUUM seconds")
    ax[2].plot(xs, [r[4] / 2**20 for r in rows], marker="o")
    ax[2].set_title("index MiB")
    for a in ax:
        a.set_xlabel("round")
        a.grid(alpha=0.3)
    fig.suptitle(f"{folder.name}: churn with in-place delete repair")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{folder.name}-churn.png", dpi=100)


if __name__ == "__main__":
    main()
