"""Makes a synthetic data set of another kind, for checking defaults away from the shared
sets: 200 Gaussian clusters in 96 dimensions with a decaying spectrum (coordinate i has
scale 1/sqrt(1 + i), as embeddings' principal components do), 100,000 base vectors and
1,000 queries from the same mixture, cosine, exact ground truth (top 100) by brute force.

    python bench/synth.py /tmp/omen-derived/synth-cosine-96

Seeded, so the same files every time. The output is generated data: keep it out of the
repository (for example under /tmp). The folder name must hold "cosine" (bench/run.py reads
the metric from it).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive import ground_truth, write_vecs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=96)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    n, nq, d, clusters = args.rows, 1000, args.dims, 200
    scale = 1.0 / np.sqrt(1 + np.arange(d))
    centers = rng.normal(size=(clusters, d)) * scale * 2.0
    label = rng.integers(0, clusters, size=n + nq)
    x = (centers[label] + rng.normal(size=(n + nq, d)) * scale).astype(np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = out.name
    base, queries = x[:n], x[n:]
    write_vecs(out / f"{name}_base.fvecs", base)
    write_vecs(out / f"{name}_query.fvecs", queries)
    write_vecs(out / f"{name}_groundtruth.ivecs", ground_truth(base, queries, "cosine"))
    (out / "README.md").write_text(
        f"Synthetic (bench/synth.py): {clusters} Gaussian clusters, {d} dimensions, decaying spectrum, "
        f"{n} base vectors, {nq} queries, cosine ground truth (top 100). Generated; not kept.\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
