"""The head's input from its parts: backbone features and/or cell descriptors.

One rule for rounds, scoring, MC-dropout, the cold start, diversity, the
curator's nearest cells and the simulator: each part used by a project's
feature sources (models/feature_sources.py) is standardised with its own
mean and std, then the parts are concatenated in a fixed order (backbone,
descriptors).  A classifier keeps its standardisation inside the Keras model
(Normalization layers, worker/ml/network.py), so prediction on images, an
exported model and cached-feature scoring apply the same numbers.

The one exception is the plain ``backbone`` source: its head reads the raw
pooled features, as every model before issue 15 did (the head's training
folds a standardisation into its weights instead, worker/ml/train.py), so
old models, caches and embeddings keep their meaning.

NumPy only at import time (fitting borrows worker.ml.train's rule for constant columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.feature_sources import check, uses_backbone, uses_descriptors

BACKBONE = "backbone"
DESCRIPTORS = "descriptors"


def parts_of(sources: str) -> tuple[str, ...]:
    """The parts a source setting reads, in head-input order."""
    return tuple(p for p, used in ((BACKBONE, uses_backbone(sources)),
                                   (DESCRIPTORS, uses_descriptors(sources))) if used)


def standardised_parts(sources: str) -> tuple[str, ...]:
    """The parts the head sees standardised (all but a lone backbone, see above)."""
    return () if check(sources) == "backbone" else parts_of(sources)


@dataclass
class Standardisation:
    """mean and std per standardised part (float32 vectors)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]


KERAS_NORMALIZATION_EPSILON = 1e-7  # keras.backend.epsilon(), Normalization's floor


def fit_standardisation(sources: str, parts: dict[str, np.ndarray]) -> Standardisation:
    """Per-column mean and std of each standardised part (constant columns get std 1).

    Fitted on cells without their labels (a round's training and pool cells,
    the simulator's pool): more rows than the labeled few, no label leaks.
    """
    from worker.ml.train import standardisation

    mean, std = {}, {}
    for name in standardised_parts(sources):
        m, s = standardisation(np.asarray(parts[name], dtype=np.float32))
        # Keras' Normalization layer (the saved model's copy of these numbers)
        # divides by max(std, 1e-7); a column below that is treated as constant
        # here too, so cached-feature scoring and the model agree.
        s = np.where(s < KERAS_NORMALIZATION_EPSILON, 1.0, s)
        mean[name], std[name] = m.astype(np.float32), s.astype(np.float32)
    return Standardisation(mean, std)


def combine(sources: str, parts: dict[str, np.ndarray | None],
            stats: Standardisation | None) -> np.ndarray:
    """The head input ``[n, d]``: each part standardised where it should be, concatenated."""
    blocks = []
    for name in parts_of(sources):
        x = parts.get(name)
        if x is None:
            raise ValueError(f"feature sources {sources!r} need the {name} part")
        x = np.asarray(x, dtype=np.float32)
        if name in standardised_parts(sources):
            if stats is None or name not in stats.mean:
                raise ValueError(f"no standardisation for the {name} part")
            x = (x - stats.mean[name]) / stats.std[name]
        blocks.append(x.astype(np.float32))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
