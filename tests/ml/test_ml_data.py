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
