"""What the benchmarks share: the command line, a fresh database, progress lines."""

import argparse
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import vecs
from progress import Progress

RESULTS = Path(__file__).resolve().parent / "results"
# A line per phase with the time since the start and the phase's own duration.
progress = Progress()
say = progress.say
phase = progress.phase


def metric_of(name: str) -> tuple[str, str]:
    """(operator class, operator) of a data set by its folder name: inner product when the
    name ends in "-ip" or holds "dot", else cosine for sentence embeddings ("minilm",
    "angular" or "cosine" in the name), L2 otherwise."""
    if name.endswith("-ip") or "dot" in name:
        return "vector_ip_ops", "<#>"
    if any(k in name for k in ("minilm", "angular", "cosine")):
        return "vector_cosine_ops", "<=>"
    return "vector_l2_ops", "<->"


def data_from_args():
    """Parses `DATA_FOLDER [--queries N]`; returns (folder, base, queries, truth, query texts)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    folder = Path(args.data)
    with phase(f"read {folder.name}"):
        base, queries, truth = vecs.load(folder)
    queries, truth = queries[: args.queries], truth[: args.queries]
    return folder, base, queries, truth, [vecs.vector_text(q) for q in queries]


def write_results(filename: str, md: list[str]) -> None:
    """Writes the markdown lines `md` to bench/results/`filename` and prints them."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / filename
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out}")


def fresh_db(name: str) -> None:
    """Drops and creates database `name`."""
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
