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
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM
    from worker.training import SEED, pristine_key

    from worker.ml.backend import CellClassifier
    from worker.ml.weights import resolve_backbone_weights

    # The key names the backbone without building it (building InceptionV3 is
    # seconds of CPU the fully cached case does not need).
    source, _, _ = resolve_backbone_weights(weights)
    probe = type("Probe", (), {"weights_source": source})()
    key = pristine_key(probe, input_size)
    store = FeatureStore(Path(cache_dir), key)
    feats, ok = store.get_many(list(shas), FEATURE_DIM)
    missing = np.flatnonzero(~ok)
    if len(missing):
        clf, _ = CellClassifier.create([0, 1], input_size, weights, seed=SEED)
        computed, computed_ok = clf.features([paths[i] for i in missing], batch_size,
                                             progress=progress)
        feats[missing] = computed
        ok[missing] = computed_ok
        store.put_many(list(shas), feats, missing[computed_ok])
    elif progress is not None:
        progress(len(shas), len(shas))
    return feats, ok, key
