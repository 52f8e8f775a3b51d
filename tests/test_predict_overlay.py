"""The Grad-CAM overlay drawn by the web process (webapp/predict/overlay.py): no TensorFlow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from webapp.predict.overlay import jet, overlay_png


def test_overlay_and_colours(tmp_path):
    path = tmp_path / "cell.png"
    Image.new("RGB", (40, 20), (255, 255, 255)).save(path)
    cam = np.zeros((2, 2), np.float32)
    cam[0, 0] = 1.0
    png = overlay_png(path, cam)
    with Image.open(io.BytesIO(png)) as out:
        assert out.format == "PNG"
        pixels = np.asarray(out)
    assert pixels.shape == (20, 40, 3)  # the image's own size: the map is stretched over it
    assert pixels[0, 0, 0] > pixels[0, 0, 2]  # hot corner: red over blue
    assert pixels[-1, -1, 2] > pixels[-1, -1, 0]  # cold corner: blue
    np.testing.assert_array_equal(jet(np.array([0.0, 1.0])), [[0, 0, 127], [127, 0, 0]])


def test_a_large_image_is_drawn_at_most_512_px(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1200, 600), (200, 100, 50)).save(path)
    with Image.open(io.BytesIO(overlay_png(path, [[0.2, 0.9], [0.0, 0.5]]))) as out:
        assert out.size == (512, 256)
