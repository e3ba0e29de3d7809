"""Readers for the TEXMEX vector formats of ../shared/data: .fvecs (float32), .bvecs (uint8)
and .ivecs (int32). Each record is a little-endian int32 dimension, then the values."""

from pathlib import Path

import numpy as np


def read_vecs(path: Path) -> np.ndarray:
    """Reads a .fvecs, .bvecs or .ivecs file into a 2-D array (float32 for base vectors)."""
    path = Path(path)
    raw = path.read_bytes()
    dim = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    elem = {".fvecs": ("<f4", 4), ".bvecs": ("u1", 1), ".ivecs": ("<i4", 4)}[path.suffix]
    record = 4 + dim * elem[1]
    n = len(raw) // record
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(n, record)[:, 4:]
    values = np.ascontiguousarray(rows).view(elem[0]).reshape(n, dim)
    return values.astype(np.int64 if path.suffix == ".ivecs" else np.float32)


def find(folder: Path, kind: str) -> Path:
    """The file of `kind` (base, query, groundtruth) in a data folder."""
    matches = sorted(
        p for p in Path(folder).iterdir() if p.suffix in (".fvecs", ".bvecs", ".ivecs") and f"_{kind}." in p.name
    )
    if not matches:
        raise FileNotFoundError(f"no *_{kind}.*vecs file in {folder}")
    return matches[0]


def load(folder: Path):
    """(base, queries, ground truth) of a data folder."""
    return (read_vecs(find(folder, "base")), read_vecs(find(folder, "query")), read_vecs(find(folder, "groundtruth")))


def vector_text(v: np.ndarray) -> str:
    """The text form of one vector, exact for float32 values."""
    return "[" + ",".join(repr(float(x)) for x in v) + "]"
