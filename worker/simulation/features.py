"""Backbone features for the simulator, through the production feature cache.

The backbone is built exactly as a round builds a fresh one (same seed, so
random initialisation is reproducible) and features are cached under the same
key a round would use, so repeats and strategies (and later runs) reuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def backbone_features(paths: Sequence[Path], shas: Sequence[str], *, cache_dir: Path,
                      input_size: int, weights: str, batch_size: int = 32,
                      progress: Callable[[int, int], None] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """(features [n, 2048], ok mask [n], feature key); computes only what is not cached."""
    from worker.backbone import SEED, configured_key, features_through_cache
    from worker.ml.backend import CellClassifier

    # The key names the backbone without building it (building InceptionV3 is
    # seconds of CPU the fully cached case does not need).
    key = configured_key(weights, input_size)
    feats, ok, _, _ = features_through_cache(
        Path(cache_dir), key, shas, lambda rows: [paths[i] for i in rows],
        lambda: CellClassifier.create([0, 1], input_size, weights, seed=SEED)[0], batch_size,
        progress=progress)
    return feats, ok, key


def head_features(paths: Sequence[Path], shas: Sequence[str], *, sources: str, cache_dir: Path,
                  input_size: int, weights: str, batch_size: int = 32,
                  progress: Callable[[int, int], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(head input [n, d], ok mask [n]) for ``sources``, as a round builds it
    (worker/head_inputs.py): cached backbone features and/or descriptors, each
    standardised on every readable cell (no labels used)."""
    from models.feature_sources import uses_backbone
    from worker.backbone import SEED, configured_key
    from worker.head_inputs import fitted_head_input, read_parts
    from worker.ml.backend import CellClassifier

    key = configured_key(weights, input_size) if uses_backbone(sources) else None
    parts = read_parts(
        Path(cache_dir), sources, key, shas, lambda rows: [paths[i] for i in rows],
        lambda: CellClassifier.create([0, 1], input_size, weights, seed=SEED)[0], batch_size,
        progress=progress)
    feats, _ = fitted_head_input(sources, parts)
    feats[~parts.ok] = 0.0
    return feats, parts.ok


def embeddings_file(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed features from a ``.npy`` file, one row per cell in the simulator's
    order (class folders sorted by name, files sorted, duplicate content once);
    SimulationRefused when it does not fit."""
    from .dataset import SimulationRefused

    try:
        x = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SimulationRefused(f"{path} is not a readable .npy file "
                                f"({type(exc).__name__}).") from None
    if x.ndim != 2 or len(x) != n:
        raise SimulationRefused(f"{path} holds an array of shape {tuple(x.shape)}; the folder "
                                f"has {n} cells, so it needs {n} rows (one per cell).")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise SimulationRefused(f"{path} holds NaN or infinite values.")
    return x, np.ones(n, dtype=bool)
