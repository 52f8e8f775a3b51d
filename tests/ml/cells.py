"""Synthetic cells for the TensorFlow tests: fast, and separable by colour."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_disk_image(path, colour, size=64, seed=0):
    """A coloured disk on a grey background, like a stained cell on a slide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 4) ** 2
    pixels = np.full((size, size, 3), 220, dtype=np.uint8)
    pixels[inside] = colour
    Image.fromarray(pixels).save(path)
    return path
