import numpy as np
import pytest
from PIL import Image

from worker.ml.data import ImageLoadError, image_batches, load_image
from tests.ml.cells import write_disk_image




@pytest.fixture
def mixed_paths(tmp_path):
    """Seven paths: good images with a corrupt file and a missing one among them."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(1).bytes(300))
    paths = [write_disk_image(tmp_path / f"ok{i}.png", (200, 30, 30), size=48, seed=i)
             for i in range(5)]
    paths.insert(1, corrupt)
    paths.insert(4, tmp_path / "missing.png")
    return paths  # bad ones at indices 1 and 4


def test_load_image_shape_and_inception_preprocessing(tmp_path):
    path = write_disk_image(tmp_path / "cell.png", (255, 0, 0), size=75)
    x = load_image(path, 75)
    assert x.shape == (75, 75, 3) and x.dtype == np.float32
    raw = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    np.testing.assert_array_equal(x, raw / 127.5 - 1.0)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_load_image_resizes_and_converts_grayscale(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (40, 30), 128).save(path)
    x = load_image(path, 80)
    assert x.shape == (80, 80, 3)
    np.testing.assert_allclose(x, 128 / 127.5 - 1.0, atol=1e-6)


def test_load_image_errors_carry_path_and_reason(tmp_path):
    with pytest.raises(ImageLoadError) as missing:
        load_image(tmp_path / "missing.png", 75)
    assert missing.value.path.endswith("missing.png")
    assert missing.value.reason == "file not found"

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageLoadError) as bad:
        load_image(corrupt, 75)
    assert bad.value.path == str(corrupt)
    assert bad.value.reason.startswith("cannot decode image")


def test_image_batches_keep_order_and_skip_bad_files(mixed_paths):
    failures: list[tuple[int, str]] = []
    batches = list(image_batches(mixed_paths, 75, batch_size=3, failures=failures))

    assert [indices for _, indices in batches] == [[0, 2], [3, 5], [6]]
    assert [len(batch) for batch, _ in batches] == [2, 2, 1]
    assert sorted(index for index, _ in failures) == [1, 4]
    for batch, indices in batches:
        for row, index in zip(batch, indices):
            np.testing.assert_array_equal(row, load_image(mixed_paths[index], 75))


def test_image_batches_without_failure_list_and_empty_input(mixed_paths):
    assert sum(len(i) for _, i in image_batches(mixed_paths, 75, batch_size=10)) == 5
    assert list(image_batches([], 75, batch_size=4)) == []
    with pytest.raises(ValueError):
        list(image_batches(mixed_paths, 75, batch_size=0))


# --- high bit depth (issue 11, defect 3) ---------------------------------------------

def _ramp_expected() -> np.ndarray:
    """What load_image gives for the 8-bit ramp 0..255 at 256 x 256, per channel."""
    return np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


@pytest.mark.parametrize("kind", ["png16", "I;16", "I;16B", "I", "F"])
def test_high_bit_depth_greyscale_is_scaled_not_clipped(tmp_path, kind):
    from tests import image_corpus as corpus

    data = corpus.png16_ramp() if kind == "png16" else corpus.tiff_ramp(kind)
    path = tmp_path / ("ramp.png" if kind == "png16" else "ramp.tif")
    path.write_bytes(data)
    x = load_image(path, 256)  # 256 wide: the resize keeps every column
    assert x.shape == (256, 256, 3)
    assert x.max() - x.min() > 1.9  # before the fix: 1.0 everywhere, a white square
    for channel in range(3):
        np.testing.assert_allclose(x[100, :, channel], _ramp_expected(), atol=1e-6)


def test_48bit_rgb_png_keeps_its_colours(tmp_path):
    from tests import image_corpus as corpus

    path = tmp_path / "rgb48.png"
    path.write_bytes(corpus.png48_ramp())
    x = load_image(path, 256)
    np.testing.assert_allclose(x[0, :, 0], _ramp_expected(), atol=1e-6)
    np.testing.assert_allclose(x[0, :, 1], _ramp_expected()[::-1], atol=1e-6)
    np.testing.assert_allclose(x[0, :, 2], 128 / 127.5 - 1.0, atol=1e-6)


def test_mpo_gives_its_first_frame_and_cmyk_is_converted(tmp_path):
    from tests import image_corpus as corpus

    path = tmp_path / "stereo.jpg"
    path.write_bytes(corpus.mpo((220, 20, 20), (20, 220, 20)))
    x = load_image(path, 75)
    r, g, _ = ((x[37, 37] + 1.0) * 127.5).round()
    assert r > 180 and g < 60
    cmyk = tmp_path / "cmyk.jpg"
    cmyk.write_bytes(corpus.cmyk_jpeg())
    y = load_image(cmyk, 75)
    assert y.shape == (75, 75, 3) and -1.0 <= y.min() and y.max() <= 1.0
