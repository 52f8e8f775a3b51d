"""Pixel depth: turning any image Pillow opens into 8-bit channels.

Shared by the importer (what is stored and shown in the browser) and the
worker's loader (what the network sees), so both scale a 16-bit cell the same
way.  Pillow's own ``convert("L")``/``convert("RGB")`` clips 16-bit and 32-bit
greyscale at 255 instead of scaling it: a 16-bit PNG became a white square.

Scaling rules, by Pillow mode:

- ``I;16`` and its byte orders (16-bit greyscale PNG/TIFF): the full 16-bit
  range maps onto 0..255 (``v / 257``, rounded), as a viewer shows it.
- ``I`` (32-bit integer): values within 0..65535 are taken as 16-bit data
  (how 16-bit sources arrive in this mode); anything wider is stretched from
  its minimum to its maximum, since the format says nothing about the range.
- ``F`` (32-bit float): values within 0..1 are taken as fractions of full
  scale; otherwise stretched from minimum to maximum.  NaN and infinities
  become 0.
- 48-bit RGB (16 bits per channel): Pillow already reads it into ``RGB``
  keeping the high byte of each sample, which is the same ``v / 257`` scale
  to within one level, so nothing more is done here.

Everything else (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``…) is already
8-bit and is left to Pillow's ordinary conversions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BROWSER_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}


def is_high_depth(image: Image.Image) -> bool:
    return image.mode.startswith("I;16") or image.mode in {"I", "F"}


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit channels; high bit-depth greyscale scaled, not clipped."""
    if not is_high_depth(image):
        return image
    values = np.asarray(image).astype(np.float64)  # any byte order becomes native
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            scaled = values * 255.0
        else:
            scaled = _stretch(values)
    elif image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        scaled = _stretch(values)
    else:  # I;16*, or I holding 16-bit data
        scaled = values / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Three 8-bit channels, for the network."""
    return to_8bit(image).convert("RGB")


def for_browser(image: Image.Image) -> Image.Image:
    """A mode PNG can hold at 8 bits per channel and every browser shows."""
    image = to_8bit(image)
    if image.mode in BROWSER_MODES:
        return image
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")
