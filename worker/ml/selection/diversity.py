"""Diversity on embeddings: k-center greedy (core-set) and k-means representatives.

NumPy only.  Embeddings are the unit-length PCA projections of the backbone's
pooled features (worker/ml/embeddings.py: the head's input, i.e. the
penultimate layer), so squared distances are cheap dot products.
"""

from __future__ import annotations

import numpy as np

# k-means on a very large pool fits on a sample: representatives of 20,000
# cells describe the pool's modes as well as 100,000 do, at a fifth of the cost.
KMEANS_MAX_ROWS = 20_000
KMEANS_ITERATIONS = 15
KMEANS_INITS = 3
# Distances are updated against this many candidate rows at a time.
CHUNK = 8192


def _sq_dist_to(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    diff = points - centre
    return np.einsum("ij,ij->i", diff, diff)


def k_center_greedy(points: np.ndarray, batch: int, seeds: np.ndarray | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Rows of ``points`` chosen greedily, each the farthest from all chosen so far
    and from ``seeds`` (e.g. the labeled cells) (Sener & Savarese 2018).

    Without seeds the first row is random.  Memory is O(n): one running
    minimum distance per candidate.
    """
    points = np.asarray(points, dtype=np.float32)
    n = len(points)
    batch = min(batch, n)
    if batch <= 0:
        return np.zeros(0, dtype=np.int64)
    min_d = np.full(n, np.inf, dtype=np.float32)
    if seeds is not None and len(seeds):
        seeds = np.asarray(seeds, dtype=np.float32)
        # ||p - s||^2 = |p|^2 + |s|^2 - 2 p.s, in blocks to bound memory.
        p2 = np.einsum("ij,ij->i", points, points)
        s2 = np.einsum("ij,ij->i", seeds, seeds)
        for start in range(0, len(seeds), 1024):
            block = seeds[start:start + 1024]
            d = p2[:, None] + s2[None, start:start + 1024] - 2 * points @ block.T
            np.minimum(min_d, d.min(axis=1), out=min_d)
    chosen = np.empty(batch, dtype=np.int64)
    for k in range(batch):
        if np.isinf(min_d).all():
            nxt = int((rng or np.random.default_rng(0)).integers(n))
        else:
            nxt = int(np.argmax(min_d))
        chosen[k] = nxt
        np.minimum(min_d, _sq_dist_to(points, points[nxt]), out=min_d)
        min_d[chosen[: k + 1]] = -1.0  # never picked twice
    return chosen


def _kmeans_pp_init(points: np.ndarray, k: int, rng: np.random.Generator,
                    weights: np.ndarray | None) -> np.ndarray:
    n = len(points)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    first = rng.choice(n, p=w / w.sum())
    centres = [points[first]]
    d = _sq_dist_to(points, points[first]).astype(np.float64)
    for _ in range(1, k):
        p = np.maximum(d, 0) * w
        total = p.sum()
        idx = rng.choice(n, p=p / total) if total > 0 else rng.integers(n)
        centres.append(points[idx])
        d = np.minimum(d, _sq_dist_to(points, points[idx]))
    return np.stack(centres)


def kmeans_representatives(points: np.ndarray, batch: int, rng: np.random.Generator,
                           weights: np.ndarray | None = None) -> np.ndarray:
    """One row per k-means cluster (k = ``batch``): the member nearest its centre.

    Representatives, not outliers: k-center greedy alone favours the odd
    cells at the edge of the cloud (debris, bad crops) when nothing is
    labeled yet.  ``weights`` (e.g. uncertainty) pull the centres towards the
    cells that matter (weighted k-means, Zhdanov 2019).
    """
    points = np.asarray(points, dtype=np.float32)
    n = len(points)
    batch = min(batch, n)
    if batch <= 0:
        return np.zeros(0, dtype=np.int64)
    if batch == n:
        return np.arange(n, dtype=np.int64)
    rows = np.arange(n)
    if n > KMEANS_MAX_ROWS:
        rows = np.sort(rng.choice(n, KMEANS_MAX_ROWS, replace=False))
    x = points[rows]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[rows] + 1e-9
    x2 = np.einsum("ij,ij->i", x, x)
    best = None
    # A few seedings, keeping the tightest: one k-means++ seeding can still
    # put two centres in one cluster and miss another.
    for _ in range(KMEANS_INITS):
        centres = _kmeans_pp_init(x, batch, rng, w)
        for _ in range(KMEANS_ITERATIONS):
            d = x2[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :] - 2 * x @ centres.T
            assign = d.argmin(axis=1)
            for c in range(batch):
                members = assign == c
                if members.any():
                    mw = None if w is None else w[members]
                    centres[c] = np.average(x[members], axis=0, weights=mw)
        d = x2[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :] - 2 * x @ centres.T
        inertia = float(d.min(axis=1).sum())
        if best is None or inertia < best[0]:
            best = (inertia, d)
    d = best[1]
    chosen: list[int] = []
    taken = np.zeros(len(x), dtype=bool)
    for c in np.argsort(d.min(axis=0)):  # tightest clusters first: a stable order
        order = np.argsort(d[:, c])
        pick = next(int(i) for i in order if not taken[i])
        taken[pick] = True
        chosen.append(pick)
    return rows[np.asarray(chosen, dtype=np.int64)]
