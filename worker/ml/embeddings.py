"""Compact cell embeddings for similarity search ("cells like this one").

Each round stores, beside its model, the backbone features of every cell it
saw, projected by PCA to a few dozen dimensions and L2-normalised: small enough
for the webapp to load and search in memory (100,000 cells x 128 float16 is
25 MB), and cosine similarity becomes a dot product.  NumPy only: the webapp
imports this, and must never import TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.files import atomic_write

DIMS = 128
# PCA is fitted on at most this many rows: plenty for 128 components.
FIT_ROWS = 10_000


def embeddings_path(artifact: Path) -> Path:
    """Where a model's embeddings live: next to its .keras file."""
    return artifact.with_suffix(".embeddings.npz")


def project(features: np.ndarray, dims: int = DIMS, seed: int = 0) -> np.ndarray:
    """PCA to ``dims`` (fewer if there are fewer rows or features), L2-normalised."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= FIT_ROWS else x[rng.choice(len(x), FIT_ROWS, replace=False)]
    mean = sample.mean(axis=0)
    # Right singular vectors of the centred sample are the principal axes.
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    k = min(dims, vt.shape[0])
    reduced = (x - mean) @ vt[:k].T
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return (reduced / np.maximum(norms, 1e-12)).astype(np.float32)


def save(path: Path, image_ids: np.ndarray, vectors: np.ndarray) -> None:
    """Write atomically (aside, then renamed): a reader never sees half a file."""
    atomic_write(path, lambda tmp: np.savez(tmp, image_ids=np.asarray(image_ids, dtype=np.int64),
                                            vectors=np.asarray(vectors, dtype=np.float16)),
                 suffix=".npz")


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids int64 [n], vectors float32 [n, d], unit length)."""
    with np.load(path) as data:
        return data["image_ids"], data["vectors"].astype(np.float32)


def nearest(query: np.ndarray, vectors: np.ndarray, k: int,
            candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` vectors most similar to ``query`` (cosine), best first.

    ``candidates`` (row indices) restricts the search, e.g. to cells already
    labeled as one class.  Returns (rows, similarities).
    """
    rows = np.arange(len(vectors)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(rows) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    sims = vectors[rows] @ np.asarray(query, dtype=np.float32)
    k = min(k, len(rows))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top])]
    return rows[top], sims[top]
