"""How well cell descriptors separate real cells (../shared/data/pbc-dev), and what they cost.

Computes worker.ml.descriptors for every image twice: colour taken from the
cell's masks (region "cell", what the product uses) and from the whole image
(region "crop", for comparison: the issue warns that PBC ``ig`` images often
have a blue-grey background).  Vectors are cached under bench/out/ in a
FeatureStore keyed by content hash, so reruns skip the image work.

Then, for colour only, morphometry only and both, in each region:
- 10-NN class purity on standardised features (all images);
- test accuracy of multinomial logistic regression on standardised features
  (stratified 80/20 split, n random training labels, mean of 3 seeds).
  The regression is a small NumPy/SciPy softmax with an L2 penalty
  (0.5·|W|², i.e. scikit-learn's default C = 1), fitted by L-BFGS:
  scikit-learn is not a dependency of this project.

Last line: ``descriptor_test_accuracy: X`` (both, all training labels, cell masks).

    nice python bench/descriptor_features.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

# One core: the figure is the cost of one worker process.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import minimize

from worker.ml import descriptors as d
from worker.ml.data import load_image
from worker.ml.feature_store import FeatureStore

SEEDS = (0, 1, 2)
LABEL_COUNTS = (100, 200, 500, None)  # None: every training label


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    """L2-penalised multinomial logistic regression; returns W [dim + 1, classes]."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(classes)[y]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(xb.shape[1], classes)
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        penalty = w[:-1]  # the bias is not penalised
        value = -(onehot * logp).sum() + 0.5 * (penalty**2).sum()
        grad = xb.T @ (np.exp(logp) - onehot)
        grad[:-1] += penalty
        return value, grad.ravel()

    result = minimize(loss, np.zeros(xb.shape[1] * classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": 500})
    return result.x.reshape(xb.shape[1], classes)


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.hstack([x, np.ones((len(x), 1))]) @ w).argmax(axis=1)


def stratified_split(y: np.ndarray, seed: int, test_fraction: float = 0.2):
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test.extend(members[: round(test_fraction * len(members))])
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def knn_purity(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    (z,) = standardise(x)
    sq = (z**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * z @ z.T
    np.fill_diagonal(dist, np.inf)
    neighbours = np.argpartition(dist, k, axis=1)[:, :k]
    return float((y[neighbours] == y[:, None]).mean())


def accuracies(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[list[float], np.ndarray]:
    """Mean test accuracy over SEEDS for each of LABEL_COUNTS, and the
    per-class recall with all training labels (mean over SEEDS)."""
    out, recall = [], np.zeros(classes)
    for n in LABEL_COUNTS:
        scores = []
        for seed in SEEDS:
            train, test = stratified_split(y, seed)
            rng = np.random.default_rng(1000 + seed)
            chosen = train if n is None else rng.choice(train, size=min(n, len(train)),
                                                        replace=False)
            xtr, xte = standardise(x[chosen], x[test])
            w = fit_softmax(xtr, y[chosen], classes)
            hit = predict(w, xte) == y[test]
            scores.append(float(hit.mean()))
            if n is None:
                recall += [hit[y[test] == c].mean() / len(SEEDS) for c in range(classes)]
        out.append(float(np.mean(scores)))
    return out, recall


def background_colour(paths: list[Path]) -> np.ndarray:
    """Colour of what is NOT the cell (3 px beyond its mask): the acquisition
    shortcut.  A 4x4x4 RGB histogram and per-channel mean and std (70 values)."""
    rows = []
    for path in paths:
        a = (load_image(path, d.WORK_SIZE) + 1.0) * 127.5
        _, cell = d.segment(a)
        outside = ~ndi.binary_dilation(cell, iterations=3)
        px = a[outside] if outside.any() else a.reshape(-1, 3)
        bins = np.minimum((px * (4 / 256.0)).astype(int), 3)
        hist = np.bincount((bins[:, 0] * 4 + bins[:, 1]) * 4 + bins[:, 2], minlength=64)
        rows.append(np.concatenate([hist / len(px), px.mean(0) / 255, px.std(0) / 255]))
    return np.asarray(rows, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pbc-dev")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "out" / "features")
    parser.add_argument("--cost-sample", type=int, default=100,
                        help="images timed without the cache for the per-cell cost")
    args = parser.parse_args()
    if not args.data.is_dir():
        # /work layouts and CI put it beside the checkout; try the usual place too.
        fallback = Path("/work/shared/data/pbc-dev")
        if fallback.is_dir():
            args.data = fallback
        else:
            sys.exit(f"SKIP: {args.data} not found: this benchmark needs the PBC development set")

    classes = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    paths = sorted(p for c in classes for p in (args.data / c).iterdir() if p.is_file())
    y = np.array([classes.index(p.parent.name) for p in paths])
    print(f"{len(paths)} images, {len(classes)} classes: {', '.join(classes)}")

    sample = paths[:: max(1, len(paths) // args.cost_sample)][: args.cost_sample]
    start, cpu = time.perf_counter(), time.process_time()
    d.compute_descriptors(sample)
    per_cell_ms = (time.perf_counter() - start) / len(sample) * 1000
    # CPU time is what the cell costs; wall time also counts waiting for a
    # core on a shared machine.
    cpu_ms = (time.process_time() - cpu) / len(sample) * 1000
    print(f"descriptor cost: {per_cell_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU per cell "
          f"(one process, one thread, {len(sample)} images incl. JPEG decode, "
          f"{d.DESCRIPTOR_DIM} values, {d.WORK_SIZE} px working size)")

    shas = [sha256(p) for p in paths]
    feats = {}
    for region in d.REGIONS:
        store = FeatureStore(args.cache, d.descriptor_key(region))
        failures: list[tuple[int, str]] = []
        start = time.perf_counter()
        feats[region], ok = d.cached_descriptors(store, shas, paths, failures=failures)
        print(f"region {region}: {ok.sum()} ok, {len(failures)} failed, "
              f"{time.perf_counter() - start:.1f} s (cache {store.folder})")
        if not ok.all():
            sys.exit(f"descriptors failed for {len(failures)} images: {failures[:3]}")
    found = feats["cell"][:, d.FEATURE_NAMES.index("nucleus_found")]
    cyto = feats["cell"][:, d.FEATURE_NAMES.index("cytoplasm_found")]
    print(f"nucleus found in {found.mean():.3f} of cells, cytoplasm in {cyto.mean():.3f}")

    background_file = args.cache / f"bench-background-v{d.DESCRIPTOR_VERSION}.npy"
    if background_file.is_file():
        feats["background"] = np.load(background_file)
    else:
        start = time.perf_counter()
        feats["background"] = background_colour(paths)
        np.save(background_file, feats["background"])
        print(f"background colour: {time.perf_counter() - start:.1f} s")

    sets = {"colour": d.COLOUR_SLICE, "morphometry": d.MORPHOMETRY_SLICE,
            "both": slice(0, d.DESCRIPTOR_DIM)}
    runs = [(name, region, cols) for region in ("cell", "crop") for name, cols in sets.items()
            if not (name == "morphometry" and region == "crop")]  # no colour: same in both
    runs.append(("background colour only", "background", slice(None)))
    labels = {"cell": "cell masks", "crop": "whole image", "background": "outside the cell"}
    print("| features | colour from | dims | 10-NN purity | 100 labels | 200 | 500 | all |")
    print("|---|---|---|---|---|---|---|---|")
    final, recalls = None, {}
    for name, region, cols in runs:
        x = feats[region][:, cols].astype(np.float64)
        purity = knn_purity(x, y)
        acc, recall = accuracies(x, y, len(classes))
        label = "(no colour)" if name == "morphometry" else labels[region]
        print(f"| {name} | {label} | {x.shape[1]} | {purity:.3f} | "
              + " | ".join(f"{a:.3f}" for a in acc) + " |", flush=True)
        if name in ("both", "background colour only"):
            recalls[label] = recall
        if name == "both" and region == "cell":
            final = acc[-1]
    print("\nper-class recall, all training labels (both = colour + morphometry):")
    print("| class | " + " | ".join(recalls) + " |")
    print("|---|" + "---|" * len(recalls))
    for c, cls in enumerate(classes):
        print(f"| {cls} | " + " | ".join(f"{r[c]:.3f}" for r in recalls.values()) + " |")
    print(f"descriptor_test_accuracy: {final:.3f}")


if __name__ == "__main__":
    main()
