"""Every form the importer stores decodes the same in TensorFlow's fine-tuning pipeline
as in the Pillow loader (features, scoring): display, scoring and fine-tuning see one image.

TensorFlow cannot read TIFF at all and would read 16-bit files its own way, which is
one reason the importer stores TIFF and high bit-depth images as 8-bit PNG.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests import image_corpus as corpus
from webapp.ingest import decode
from worker.ml.data import load_image
from worker.ml.pipeline import _decode

FORMS = {
    "png16": corpus.png16_ramp, "png48": corpus.png48_ramp,
    "tiff16": lambda: corpus.tiff_ramp("I;16B"), "tiff-float": lambda: corpus.tiff_ramp("F"),
    "tiff-rgb": lambda: corpus.tiff_rgb(1), "webp": lambda: corpus.cell(4, fmt="WEBP"),
    "bmp": lambda: corpus.cell(3, fmt="BMP"), "cmyk": corpus.cmyk_jpeg,
    "palette": corpus.palette_png_with_transparency,
    "mpo": lambda: corpus.mpo((200, 30, 30), (30, 200, 30)),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_pipeline_and_loader_agree_on_stored_forms(tmp_path, name):
    stored = decode(FORMS[name](), 1_000_000)
    path = tmp_path / f"{name}{stored.extension}"
    path.write_bytes(stored.data)
    pil = (load_image(path, 75) + 1.0) * 127.5
    tf_image = _decode(tf.constant(str(path)), 75).numpy()
    # Same pixels; the two resizers differ by at most a couple of levels out of 255.
    assert np.abs(tf_image - pil).max() <= 2.5, name
    assert tf_image.max() - tf_image.min() > 20, name  # not a flat (clipped) image
