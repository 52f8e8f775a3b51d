"""A Grad-CAM map drawn over its cell, as PNG: NumPy and Pillow, no TensorFlow.

The predict worker answers with each cell's map as numbers (its grid is the
backbone's last block: 2x2 at 128 px, 8x8 at 299 px); the picture is drawn
here, when the page shows it or an API caller asks for it, and kept beside
the upload.  So a prediction's answer does not wait for image encoding that
a program calling the API may never want.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from models.pixels import to_rgb

# Overlays are for the page: the longest side is at most this many pixels.
OVERLAY_MAX_SIDE = 512
OVERLAY_ALPHA = 0.45


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 with the 'jet' colour ramp (blue, cyan, yellow, red)."""
    x = np.clip(values, 0.0, 1.0)[..., None]
    ramp = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (ramp * 255).astype(np.uint8)


def overlay_png(path: str | Path, cam: np.ndarray) -> bytes:
    """The image at ``path`` with ``cam`` coloured over it, as PNG bytes.

    The model saw the image squeezed to a square; the map is stretched back
    over the whole image, so each region lands where it came from.
    """
    with Image.open(path) as image:
        # A JPEG decodes at a fraction of its size when that is all we need:
        # the web process draws this, and an upload may be tens of megapixels.
        image.draft("RGB", (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
        rgb = to_rgb(image)
    rgb.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
    cam = np.asarray(cam, dtype=np.float32)
    heat = Image.fromarray(np.asarray(np.clip(cam, 0, 1) * 255, dtype=np.uint8), "L")
    heat = heat.resize(rgb.size, Image.Resampling.BILINEAR)
    coloured = Image.fromarray(jet(np.asarray(heat, dtype=np.float32) / 255.0), "RGB")
    out = io.BytesIO()
    # Fast compression: the overlay is shown once and thrown away with the upload.
    Image.blend(rgb.convert("RGB"), coloured, OVERLAY_ALPHA).save(out, "PNG", compress_level=1)
    return out.getvalue()
