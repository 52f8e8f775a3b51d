"""Backbone features through the feature cache: one path for every user.

Rounds (worker/training.py), the strategy simulator (worker/simulation), the
review queue's cold start and BALD's lookup of a version's features
(worker/review_queue.py) all read features here, so they agree on the cache
key of a backbone and on what is computed and stored.  Depends on nothing
else in the worker (only worker.ml), so it closes no import circle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

# The seed every fresh backbone and head is built with: random initialisation
# is reproducible, and a pristine backbone's cached features stay valid.
SEED = 0


@lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_key(source: str | None, input_size: int) -> str:
    """The cache key of a pristine backbone from its weights source, without building it."""
    import tensorflow as tf

    from worker.ml.feature_store import backbone_key

    digest = None
    if source not in (None, "imagenet"):
        stat = Path(source).stat()
        digest = _file_digest(source, stat.st_size, stat.st_mtime)
    return backbone_key(source, input_size, seed=SEED, weights_digest=digest,
                        tf_version=tf.__version__)


def pristine_key(clf, input_size: int) -> str:
    """The cache key of a classifier's pristine backbone (anything with weights_source)."""
    return source_key(clf.weights_source, input_size)


def configured_key(weights: str, input_size: int) -> str:
    """The pristine backbone the settings name (raises WeightsError when they are bad)."""
    from worker.ml.weights import resolve_backbone_weights

    source, _, _ = resolve_backbone_weights(weights)
    return source_key(source, input_size)


def features_through_cache(
    cache_dir: Path, key: str, shas: Sequence[str], paths: Callable[[np.ndarray], list[Path]],
    classifier: Callable[[], object], batch_size: int, *,
    progress: Callable[[int, int], None] | None = None, store: bool = True,
    on_missing: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], int]:
    """Features for ``shas`` under backbone ``key``: from the cache, computing the rest.

    ``paths(rows)`` gives the image files of the rows not cached; ``classifier()``
    gives the network that computes them (called only when something is missing,
    so a fully cached call never builds one).  With ``store`` the computed
    features are cached.  ``on_missing(n)`` is told how many must be computed
    before the work starts.

    Returns (features [n, 2048], ok mask, failures as (row, reason), rows found
    in the cache).
    """
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM

    cache = FeatureStore(Path(cache_dir), key)
    shas = list(shas)
    feats, found = cache.get_many(shas, FEATURE_DIM)
    missing = np.flatnonzero(~found)
    if on_missing is not None:
        on_missing(len(missing))
    ok = found.copy()
    failures: list[tuple[int, str]] = []
    if len(missing):
        computed, computed_ok = classifier().backbone_features(
            paths(missing), batch_size, failures=failures, progress=progress)
        feats[missing] = computed
        ok[missing] = computed_ok
        if store:
            cache.put_many(shas, feats, missing[computed_ok])
        failures = [(int(missing[i]), why) for i, why in failures]
    elif progress is not None:
        progress(len(shas), len(shas))
    return feats, ok, failures, int(found.sum())
