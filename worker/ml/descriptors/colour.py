"""Stain colour of a cell: a joint RGB histogram and colour moments of nucleus and cytoplasm."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

from worker.ml.descriptors.segmentation import inner

_HIST_BINS = 4  # per RGB channel: a 4x4x4 joint histogram
_FLAT_STD = 0.01  # colour std (0-1 scale) below which a region counts as flat


def _colour_names() -> list[str]:
    names = [f"hist_r{r}g{g}b{b}" for r in range(_HIST_BINS)
             for g in range(_HIST_BINS) for b in range(_HIST_BINS)]
    for part in ("nucleus", "rest"):
        for stat in ("mean", "std", "skew"):
            names += [f"{part}_{c}_{stat}" for c in "rgb"]
    return names


COLOUR_NAMES: list[str] = _colour_names()


def moments(pixels: np.ndarray) -> np.ndarray:
    """Mean, std and skewness of each RGB channel (scaled to 0-1): 9 values."""
    if len(pixels) == 0:
        return np.zeros(9, dtype=np.float64)
    x = pixels / 255.0
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # Skewness of a nearly flat region is noise over noise: zero it there and
    # bound it elsewhere, so one flat cytoplasm cannot dominate a distance.
    safe = np.maximum(std, _FLAT_STD)
    skew = np.where(std > _FLAT_STD, ((x - mean) ** 3).mean(axis=0) / safe**3, 0.0)
    skew = np.clip(skew, -5.0, 5.0)
    return np.concatenate([mean, std, skew])


def colour_vector(a: np.ndarray, nucleus: np.ndarray, region_mask: np.ndarray) -> np.ndarray:
    """Histogram of the region, moments of the nucleus and of the rest of the region."""
    nucleus = inner(nucleus) if nucleus.any() else nucleus
    rest = region_mask & ~nucleus
    # Two pixels off the nucleus: its edge blends into the cytoplasm there.
    core = inner(region_mask) & ~ndi.binary_dilation(nucleus, disk(2))
    rest = core if core.any() else rest
    pixels = a[inner(region_mask)]
    if len(pixels):
        bins = np.minimum((pixels * (_HIST_BINS / 256.0)).astype(int), _HIST_BINS - 1)
        flat = (bins[:, 0] * _HIST_BINS + bins[:, 1]) * _HIST_BINS + bins[:, 2]
        hist = np.bincount(flat, minlength=_HIST_BINS ** 3) / len(pixels)
    else:
        hist = np.zeros(_HIST_BINS ** 3)
    return np.concatenate([hist, moments(a[nucleus]), moments(a[rest])])
