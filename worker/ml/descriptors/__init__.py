"""Cell descriptors: stain colour and nucleus morphometry, without a backbone.

A randomly initialised InceptionV3 (no ImageNet weights offline) gives features
that barely separate the classes (issue 15); what a haematologist looks at
does: the nucleus's size, shape and lobes, how much of the cell it fills, its
chromatin, and the stain colours of nucleus and cytoplasm.  This module
measures those once per cell, as a fixed-length, versioned vector that is
cached in a FeatureStore under :func:`descriptor_key`, like backbone features.

Colour is taken from the cell (nucleus and cytoplasm masks), not from the
background: in PBC many ``ig`` images have a blue-grey background, and colour
of the slide says how the image was acquired rather than what the cell is.
``region="crop"`` (whole image) exists only so a benchmark can show the
difference.

NumPy, SciPy and scikit-image only: no TensorFlow, Celery or SQLAlchemy here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from worker.ml.data import ImageLoadError, load_image
from worker.ml.descriptors.colour import COLOUR_NAMES, colour_vector
from worker.ml.descriptors.morphometry import (
    MORPHOMETRY_NAMES,
    count_lobes,
    morphometry_vector,
)
from worker.ml.descriptors.segmentation import WORK_SIZE, segment, working_rgb
from worker.ml.feature_store import FeatureStore

__all__ = [
    "COLOUR_NAMES", "COLOUR_SLICE", "DESCRIPTOR_DIM", "DESCRIPTOR_VERSION", "FEATURE_NAMES",
    "MORPHOMETRY_NAMES", "MORPHOMETRY_SLICE", "REGIONS", "WORK_SIZE", "cached_descriptors",
    "compute_descriptors", "count_lobes", "describe", "describe_path", "descriptor_key",
    "segment",
]

# Bump when any value changes meaning (segmentation, names, order): cached
# vectors of another version are then never read (they live under another key).
DESCRIPTOR_VERSION = 1
REGIONS = ("cell", "crop")

FEATURE_NAMES: list[str] = COLOUR_NAMES + MORPHOMETRY_NAMES
DESCRIPTOR_DIM = len(FEATURE_NAMES)
COLOUR_SLICE = slice(0, len(COLOUR_NAMES))
MORPHOMETRY_SLICE = slice(len(COLOUR_NAMES), DESCRIPTOR_DIM)


def descriptor_key(region: str = "cell") -> str:
    """The FeatureStore key of this descriptor set (a folder of its own)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    return f"descriptors-v{DESCRIPTOR_VERSION}-{WORK_SIZE}-{region}"


def describe(rgb: np.ndarray, region: str = "cell") -> np.ndarray:
    """The descriptor vector (float32, DESCRIPTOR_DIM, NaN-free) of one RGB image.

    Where no nucleus is found, ``nucleus_found`` is 0 and the morphometry is
    zeros; colour then falls back to the whole image (there is no cell mask).
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    a = working_rgb(rgb)
    nucleus, cell = segment(a)
    if region == "crop" or not cell.any():
        region_mask = np.ones(nucleus.shape, dtype=bool)
    else:
        region_mask = cell
    vector = np.concatenate([colour_vector(a, nucleus, region_mask), morphometry_vector(a, nucleus, cell)])
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def describe_path(path: str | Path, region: str = "cell") -> np.ndarray:
    """Descriptors of an image file, read through the backbone's loader."""
    scaled = load_image(path, WORK_SIZE)  # [-1, 1], as the backbone sees it
    return describe((scaled + 1.0) * 127.5, region)


def compute_descriptors(
    paths: Sequence[str | Path],
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
    region: str = "cell",
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors ``[n, DESCRIPTOR_DIM]`` and the ok mask, like CellClassifier.features.

    Unreadable files get a zero row, ok False, and ``(index, reason)`` in
    ``failures``; ``progress(done, total)`` is called after each image.
    """
    feats = np.zeros((len(paths), DESCRIPTOR_DIM), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        try:
            feats[i] = describe_path(path, region)
            ok[i] = True
        except ImageLoadError as exc:
            if failures is not None:
                failures.append((i, exc.reason))
        if progress is not None:
            progress(i + 1, len(paths))
    return feats, ok


def cached_descriptors(
    store: FeatureStore,
    shas: Sequence[str],
    paths: Sequence[str | Path],
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors for images keyed by content hash: cached rows read, the rest computed and stored.

    ``store`` must be keyed by :func:`descriptor_key` (its region is read
    from the key), so a new DESCRIPTOR_VERSION never reads old vectors.
    """
    if len(shas) != len(paths):
        raise ValueError("shas and paths differ in length")
    region = store.key.rsplit("-", 1)[-1]
    if store.key != descriptor_key(region if region in REGIONS else "cell"):
        raise ValueError(f"store key {store.key!r} is not a descriptor key of this version")
    feats, found = store.get_many(shas, DESCRIPTOR_DIM)
    missing = np.flatnonzero(~found)
    ok = found.copy()
    if len(missing):
        local: list[tuple[int, str]] = []
        computed, computed_ok = compute_descriptors(
            [paths[i] for i in missing],
            progress=None if progress is None else (lambda d, _t: progress(d, len(missing))),
            failures=local, region=region)
        feats[missing] = computed
        ok[missing] = computed_ok
        store.put_many(shas, feats, missing[computed_ok].tolist())
        if failures is not None:
            failures.extend((int(missing[j]), reason) for j, reason in local)
    return feats, ok
