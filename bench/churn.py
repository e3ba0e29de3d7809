"""Churn benchmark, omen beside pgvector HNSW: ten rounds of deleting 10% of the rows,
VACUUM, and inserting the same vectors back as new rows, on the same rows in two databases
of one server; after each round, per engine, recall@10 and queries/s at default settings
(omen.search_list_size 40, hnsw.ef_search 40), the VACUUM time and the index size. Writes
bench/results/<dataset>-churn.md and .png.

Usage: churn.py DATA_FOLDER [--queries N]   (libpq environment; bench/run.sh --churn starts
the server)
"""

import statistics
import time

import numpy as np
import psycopg

from common import RESULTS, data_from_args, fresh_db, metric_of, phase, say, vecs

K = 10
ROUNDS = 10
ENGINES = {
    "omen": ("omendb", "CREATE INDEX items_v ON items USING omen (embedding {ops})"),
    "pgvector": (
        "vector",
        "CREATE INDEX items_v ON items USING hnsw (embedding {ops}) WITH (m = 16, ef_construction = 64)",
    ),
}


def main() -> None:
    folder, base, _, truth, texts = data_from_args()
    ops, op = metric_of(folder.name)
    conns = {}
    builds = {}
    for engine, (extension, index_sql) in ENGINES.items():
        fresh_db(f"bench_churn_{engine}")
        conn = psycopg.connect(dbname=f"bench_churn_{engine}", autocommit=True)
        conn.execute(f"CREATE EXTENSION {extension}")
        conn.execute(
            f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({base.shape[1]})) "
            "WITH (autovacuum_enabled = off)"
        )
        with (
            phase(f"{engine}: COPY {len(base)} x {base.shape[1]}"),
            conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy,
        ):
            for i, v in enumerate(base):
                copy.write_row((i, vecs.vector_text(v)))
        t0 = time.perf_counter()
        with phase(f"{engine}: CREATE INDEX"):
            conn.execute(index_sql.format(ops=ops))
        builds[engine] = time.perf_counter() - t0
        conn.execute("SET hnsw.ef_search = 40" if engine == "pgvector" else "SET omen.search_list_size = 40")
        conns[engine] = conn
    holder = np.arange(len(base))  # holder[original id] = id of the row holding that vector now
    rng = np.random.default_rng(1)
    next_id = len(base)
    sql = f"SELECT id FROM items ORDER BY embedding {op} %s::vector LIMIT 10"

    def measure(conn):
        t0 = time.perf_counter()
        hits = 0
        for q, gt in zip(texts, truth, strict=True):
            got = {r[0] for r in conn.execute(sql, (q,), prepare=True).fetchall()}
            hits += len(got & set(holder[gt[:K]].tolist()))
        return hits / (K * len(texts)), len(texts) / (time.perf_counter() - t0)

    rows = {e: [] for e in ENGINES}  # (round, recall, qps, vacuum s, size)
    size0 = {}
    for engine, conn in conns.items():
        r0, q0 = measure(conn)
        size0[engine] = conn.execute("SELECT pg_relation_size('items_v')").fetchone()[0]
        rows[engine].append((0, r0, q0, 0.0, size0[engine]))
        say(
            f"{engine}: fresh build ({builds[engine]:.1f} s): recall@{K} {r0:.4f}, {q0:,.0f} queries/s, "
            f"index {size0[engine] / 2**20:.0f} MiB"
        )
    for rnd in range(1, ROUNDS + 1):
        victims = rng.choice(len(base), size=len(base) // 10, replace=False)
        old_ids = holder[victims].tolist()
        new_ids = list(range(next_id, next_id + len(victims)))
        next_id += len(victims)
        holder[victims] = new_ids
        for engine, conn in conns.items():
            round_started = time.perf_counter()
            # Delete, VACUUM, insert: VACUUM repairs around rows that are gone. (Inserting
            # the same vectors before the VACUUM would let pgvector keep each element, its
            # new row's TID beside the dead one, and skip the repair.)
            conn.execute("DELETE FROM items WHERE id = ANY(%s)", (old_ids,))
            t0 = time.perf_counter()
            conn.execute("VACUUM items")
            vac = time.perf_counter() - t0
            with conn.cursor().copy("COPY items (id, embedding) FROM STDIN") as copy:
                for v, new in zip(victims, new_ids, strict=True):
                    copy.write_row((new, vecs.vector_text(base[v])))
            if engine == "omen":
                # Merged before measuring, as pgvector's inserts are in its graph at once.
                conn.execute("SELECT omen_flush('items_v')")
            r, q = measure(conn)
            size = conn.execute("SELECT pg_relation_size('items_v')").fetchone()[0]
            rows[engine].append((rnd, r, q, vac, size))
            say(
                f"{engine} round {rnd} ({time.perf_counter() - round_started:.1f} s): VACUUM {vac:.1f} s, "
                f"recall@{K} {r:.4f}, {q:,.0f} queries/s, index {size / 2**20:.0f} MiB ({size / size0[engine]:.2f}x)"
            )

    RESULTS.mkdir(exist_ok=True)
    md = [
        f"### {folder.name} churn: 10 rounds of delete 10% / VACUUM / insert 10% "
        f"({len(base):,} rows, {len(texts):,} queries; omen.search_list_size = 40, hnsw.ef_search = 40)",
        "",
        "| round | omen recall@10 | pgvector recall@10 | omen VACUUM (s) | pgvector VACUUM (s) | VACUUM omen/pgvector "
        "| omen index (MiB, vs first) | pgvector index (MiB, vs first) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o, p in zip(rows["omen"], rows["pgvector"], strict=True):
        ratio = f"{o[3] / p[3]:.2f}×" if p[3] > 0 else ""
        o_size = f"{o[4] / 2**20:.0f} ({o[4] / size0['omen']:.2f}×)"
        p_size = f"{p[4] / 2**20:.0f} ({p[4] / size0['pgvector']:.2f}×)"
        md.append(f"| {o[0]} | {o[1]:.4f} | {p[1]:.4f} | {o[3]:.1f} | {p[3]:.1f} | {ratio} | {o_size} | {p_size} |")
    ratios = [o[3] / p[3] for o, p in zip(rows["omen"][1:], rows["pgvector"][1:], strict=True) if p[3] > 0]
    md += [
        "",
        f"- VACUUM time omen/pgvector, median over the rounds: {statistics.median(ratios):.2f}×",
        f"- omen recall: fresh {rows['omen'][0][1]:.4f}, lowest through the rounds "
        f"{min(r[1] for r in rows['omen'][1:]):.4f}; index at most "
        f"{max(r[4] for r in rows['omen']) / size0['omen']:.2f}× its first size",
        "- each round deletes, VACUUMs, then inserts the same vectors as new rows (omen's merged by `omen_flush` "
        "before measuring): both VACUUMs repair around rows that are gone",
    ]
    (RESULTS / f"{folder.name}-churn.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    for engine, marker in (("omen", "o"), ("pgvector", "s")):
        rs = rows[engine]
        xs = [r[0] for r in rs]
        ax[0].plot(xs, [r[1] for r in rs], marker=marker, label=engine)
        ax[1].plot(xs[1:], [r[3] for r in rs[1:]], marker=marker, label=engine)
        ax[2].plot(xs, [r[4] / 2**20 for r in rs], marker=marker, label=engine)
    ax[0].set_title("recall@10")
    ax[1].set_title("VACUUM seconds")
    ax[2].set_title("index MiB")
    for a in ax:
        a.set_xlabel("round")
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(f"{folder.name}: churn, omen beside pgvector HNSW")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{folder.name}-churn.png", dpi=100)


if __name__ == "__main__":
    main()
