"""What the benchmarks share: the command line and a fresh database."""

import argparse
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import vecs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def data_from_args():
    """Parses `DATA_FOLDER [--queries N]`; returns (folder, base, queries, truth, query texts)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    folder = Path(args.data)
    base, queries, truth = vecs.load(folder)
    queries, truth = queries[: args.queries], truth[: args.queries]
    return folder, base, queries, truth, [vecs.vector_text(q) for q in queries]


def fresh_db(name: str) -> None:
    """Drops and creates database `name`."""
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
