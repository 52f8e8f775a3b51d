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
