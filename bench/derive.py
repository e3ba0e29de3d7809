"""Derives a lower-dimensional data set from a shared one, for checking defaults on data of
another dimension: PCA of the base vectors to --dims dimensions (queries projected the
same way), exact ground truth (top 100) by brute force in numpy. With --dims 0 the
dimensions are kept. With --grow ROWS the base is grown to ROWS rows by blends of two of its
rows, x_i + w x_j with w uniform in [0.2, 0.6] (each row scaled to unit length first under
cosine): a larger set with the source's geometry, for measuring how builds and queries scale.
With --copies, copies of rows are added as text collections hold them (a sentence stored
many times): ~10% of the rows once more, one row 2,000 times, 50 rows 40 times each, in a
seeded shuffle; with --copy-noise S each copy is moved by Gaussian noise of S times its
length over sqrt(dims) (near-copies) instead of being exact. With --lengths LO,HI every
base row and query is scaled by its own factor, uniform in [LO, HI] (seeded): the same
cosine neighbours, rows no longer of unit length, as some embedding models emit them.

    python bench/derive.py ../shared/data/debian-minilm-384 --dims 64 OUT_FOLDER
    python bench/derive.py ../shared/data/debian-minilm-384 --dims 0 --grow 200000 OUT_FOLDER
    python bench/derive.py ../shared/data/debian-minilm-384 --dims 0 --copies OUT_FOLDER
    python bench/derive.py ../shared/data/debian-minilm-384 --dims 0 --lengths 0.5,2 OUT_FOLDER

The metric follows the folder name as bench/run.py reads it (inner product when the name
ends in "-ip" or holds "dot", else cosine when it holds "minilm", "angular" or "cosine", L2
otherwise); name OUT_FOLDER accordingly. Writes the
TEXMEX files (fvecs, ivecs) and a README saying how the set was made. The output is derived
data: keep it out of the repository (for example under /tmp).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import vecs
from common import metric_of


def write_vecs(path: Path, rows: np.ndarray) -> None:
    dim = rows.shape[1]
    head = np.full((rows.shape[0], 1), dim, dtype=np.int32)
    body = rows.astype(np.int32 if rows.dtype.kind == "i" else np.float32)
    path.write_bytes(np.hstack([head.view(np.uint8), body.view(np.uint8)]).tobytes())


def ground_truth(base: np.ndarray, queries: np.ndarray, metric: str, k: int = 100) -> np.ndarray:
    if metric == "cosine":
        base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    # Inner product: the largest q·x first (no norm term).
    norms = np.zeros(len(base)) if metric == "ip" else (base.astype(np.float64) ** 2).sum(axis=1)
    out = np.empty((len(queries), k), dtype=np.int32)
    for start in range(0, len(queries), 100):
        q = queries[start : start + 100].astype(np.float64)
        # Squared L2 up to a per-query constant; for unit vectors it orders as cosine does.
        d = norms[None, :] - 2.0 * q @ base.T.astype(np.float64)
        top = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, top, axis=1).argsort(axis=1, kind="stable")
        out[start : start + 100] = np.take_along_axis(top, order, axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--grow", type=int, default=0)
    ap.add_argument("--copies", action="store_true")
    ap.add_argument("--copy-noise", type=float, default=0.0)
    ap.add_argument("--lengths", default="")
    args = ap.parse_args()
    src, out = Path(args.data), Path(args.out)
    base, queries, _ = vecs.load(src)
    base, queries = np.asarray(base, dtype=np.float32), np.asarray(queries[: args.queries], dtype=np.float32)
    metric = {"vector_cosine_ops": "cosine", "vector_ip_ops": "ip"}.get(metric_of(out.name)[0], "L2")
    cosine = metric == "cosine"
    if args.grow > len(base):
        rng = np.random.default_rng(11)
        unit = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30) if cosine else base
        extra = args.grow - len(base)
        i, j = rng.integers(0, len(base), size=extra), rng.integers(0, len(base), size=extra)
        w = rng.uniform(0.2, 0.6, size=(extra, 1)).astype(np.float32)
        base = np.vstack([base, unit[i] + w * unit[j]])
    if args.copies:
        rng = np.random.default_rng(3)
        n = len(base)
        extra = np.vstack(
            [base[rng.integers(0, n, n // 10)], np.repeat(base[:1], 2000, axis=0), np.repeat(base[1:51], 40, axis=0)]
        )
        if args.copy_noise > 0:
            scale = args.copy_noise * np.linalg.norm(extra, axis=1, keepdims=True) / np.sqrt(base.shape[1])
            extra = extra + (rng.normal(size=extra.shape) * scale).astype(np.float32)
        base = np.vstack([base, extra])
        base = base[rng.permutation(len(base))]
    if args.dims <= 0 or args.dims >= base.shape[1]:
        args.dims = base.shape[1]
    mean = base.mean(axis=0) if args.dims < base.shape[1] else np.zeros(base.shape[1], dtype=np.float32)
    # Principal axes from the covariance (dims × dims), largest variance first.
    cov = np.cov((base - mean).T.astype(np.float64))
    _, vecs_ = np.linalg.eigh(cov)
    axes = vecs_[:, ::-1][:, : args.dims].astype(np.float32)
    if args.dims == base.shape[1]:
        axes = np.eye(args.dims, dtype=np.float32)  # dimensions kept: no projection
    pbase, pqueries = (base - mean) @ axes, (queries - mean) @ axes
    if args.lengths:
        lo, hi = (float(x) for x in args.lengths.split(","))
        rng = np.random.default_rng(13)
        pbase = pbase * rng.uniform(lo, hi, (len(pbase), 1)).astype(np.float32)
        pqueries = pqueries * rng.uniform(lo, hi, (len(pqueries), 1)).astype(np.float32)
    truth = ground_truth(pbase, pqueries, metric)
    out.mkdir(parents=True, exist_ok=True)
    write_vecs(out / f"{out.name}_base.fvecs", pbase)
    write_vecs(out / f"{out.name}_query.fvecs", pqueries)
    write_vecs(out / f"{out.name}_groundtruth.ivecs", truth)
    (out / "README.md").write_text(
        f"# {out.name}\n\nDerived by bench/derive.py from {src.name}: PCA of the base to {args.dims} "
        f"dimensions (grown by blends: --grow {args.grow}; copies: {args.copies}, noise {args.copy_noise}; "
        f"lengths: {args.lengths or 'as given'}), "
        f"{len(pbase)} base rows, "
        f"{len(pqueries)} queries projected the same way, "
        f"exact top-100 ground truth ({metric}).\n"
    )
    print(f"{out}: {len(pbase)} × {args.dims}, {len(pqueries)} queries, {metric}")


if __name__ == "__main__":
    main()
