"""Fuzzing the validator and the loader with mutated images (Hypothesis, bounded).

Valid images of every accepted format (and a GIF) are mutated: bytes flipped,
overwritten, inserted, deleted, a slice repeated, the file cut short.  For any
such input:

- ``webapp.ingest.decode`` either accepts it or raises RejectedImage: never
  anything else, so one bad file cannot abort an import;
- ``worker.ml.data.load_image`` either loads it or raises ImageLoadError, so
  one bad file cannot crash a training round;
- what decode accepts (in the form it would be stored) load_image can load:
  nothing imported is untrainable.
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import image_corpus as corpus
from webapp.ingest import RejectedImage, decode
from worker.ml.data import ImageLoadError, load_image

MAX_PIXELS = 1_000_000
EXAMPLES = 200

SEEDS = {
    "jpeg": corpus.cell(1),
    "png": corpus.cell(2, fmt="PNG"),
    "bmp": corpus.cell(3, fmt="BMP", size=16),
    "webp": corpus.cell(4, fmt="WEBP"),
    "png16": corpus.png16_ramp(),
    "png48": corpus.png48_ramp(),
    "tiff16": corpus.tiff_ramp("I;16B"),
    "tiff-float": corpus.tiff_ramp("F"),
    "tiff-rgb": corpus.tiff_rgb(5),
    "mpo": corpus.mpo((200, 30, 30), (30, 200, 30)),
    "cmyk": corpus.cmyk_jpeg(),
    "palette": corpus.palette_png_with_transparency(),
    "gif": corpus.animated_gif(),
}


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "repeat", "cut"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 256))]
        elif op == "cut":
            del data[at:]
    return kind, bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on corrupt TIFF tags
def test_validator_and_loader_only_raise_their_own_errors():
    outcomes: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(mutated())
        def check(example: tuple[str, bytes]) -> None:
            _, data = example
            raw = folder / "raw.img"
            raw.write_bytes(data)
            try:
                load_image(raw, 75)
            except ImageLoadError:
                pass
            try:
                decoded = decode(data, MAX_PIXELS)
            except RejectedImage as exc:
                assert str(exc)  # a reason, for the user
                outcomes["rejected"] += 1
                return
            outcomes["accepted"] += 1
            stored = folder / f"stored{decoded.extension}"
            stored.write_bytes(decoded.data)
            x = load_image(stored, 75)  # accepted means trainable: no ImageLoadError here
            assert x.shape == (75, 75, 3)

        check()
    # The mutations reach both sides of the validator.
    assert outcomes["accepted"] > 0 and outcomes["rejected"] > 0, outcomes
    print(f"fuzz: {sum(outcomes.values())} examples, {dict(outcomes)}")
