"""Cell descriptors on synthetic cells whose true values are known."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.ml import descriptors as d
from worker.ml.feature_store import FeatureStore

SIZE = 256  # drawn at 256 px; descriptors work at WORK_SIZE (128), so lengths halve
PALE = (245, 228, 205)  # slide background
PURPLE = (110, 55, 150)  # nucleus
LILAC = (205, 180, 215)  # cytoplasm


def canvas(colour=PALE, size=SIZE):
    return np.full((size, size, 3), colour, dtype=np.uint8)


def disc(image, cy, cx, r, colour):
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    return image


def ellipse(image, cy, cx, a, b, colour):
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    image[((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1] = colour
    return image


def values(rgb, region="cell"):
    vector = d.describe(rgb, region)
    assert vector.shape == (d.DESCRIPTOR_DIM,)
    assert vector.dtype == np.float32
    assert np.isfinite(vector).all()
    return dict(zip(d.FEATURE_NAMES, vector.tolist()))


def test_names_fixed_length_and_versioned_key():
    assert len(d.FEATURE_NAMES) == len(set(d.FEATURE_NAMES)) == d.DESCRIPTOR_DIM
    assert d.FEATURE_NAMES[d.MORPHOMETRY_SLICE] == d.MORPHOMETRY_NAMES
    assert d.FEATURE_NAMES[d.COLOUR_SLICE] == d.COLOUR_NAMES
    assert f"v{d.DESCRIPTOR_VERSION}" in d.descriptor_key()
    assert d.descriptor_key("cell") != d.descriptor_key("crop")
    FeatureStore("/tmp", d.descriptor_key())  # a key the store accepts
    with pytest.raises(ValueError):
        d.descriptor_key("background")


def test_disc_area_round_and_one_lobe():
    r = 40
    m = values(disc(canvas(), SIZE // 2, SIZE // 2, r, PURPLE))
    assert m["nucleus_found"] == 1.0
    assert m["nucleus_area"] == pytest.approx(np.pi * r * r / SIZE**2, rel=0.05)
    assert m["nucleus_eccentricity"] < 0.2
    assert m["nucleus_solidity"] > 0.95
    assert m["nucleus_major_axis"] == pytest.approx(2 * r / SIZE, rel=0.06)
    assert m["nucleus_minor_axis"] == pytest.approx(2 * r / SIZE, rel=0.06)
    assert m["nucleus_perimeter"] == pytest.approx(2 * np.pi * r / SIZE, rel=0.1)
    assert m["nucleus_circularity"] == pytest.approx(1.0, abs=0.15)
    assert m["nucleus_lobes"] == 1.0
    assert m["nucleus_components"] == 1.0
    # a bare nucleus is the whole cell
    assert m["nucleus_to_cell"] == pytest.approx(1.0, abs=0.02)
    # colour of the nucleus is what was painted
    assert m["nucleus_r_mean"] == pytest.approx(PURPLE[0] / 255, abs=0.02)
    assert m["nucleus_b_mean"] == pytest.approx(PURPLE[2] / 255, abs=0.02)


@pytest.mark.parametrize("radius", [20, 30, 50])
def test_area_scales_with_radius(radius):
    m = values(disc(canvas(), SIZE // 2, SIZE // 2, radius, PURPLE))
    assert m["nucleus_area"] == pytest.approx(np.pi * radius**2 / SIZE**2, rel=0.08)


def test_ellipse_eccentricity_and_axes():
    a, b = 50, 25
    m = values(ellipse(canvas(), SIZE // 2, SIZE // 2, a, b, PURPLE))
    assert m["nucleus_eccentricity"] == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.03)
    assert m["nucleus_major_axis"] == pytest.approx(2 * a / SIZE, rel=0.06)
    assert m["nucleus_minor_axis"] == pytest.approx(2 * b / SIZE, rel=0.08)
    assert m["nucleus_lobes"] == 1.0


def test_two_touching_lobes():
    image = canvas()
    disc(image, SIZE // 2, SIZE // 2 - 26, 26, PURPLE)
    disc(image, SIZE // 2, SIZE // 2 + 26, 26, PURPLE)
    m = values(image)
    assert m["nucleus_components"] == 1.0  # one connected nucleus...
    assert m["nucleus_lobes"] == 2.0  # ...with two lobes
    assert m["nucleus_solidity"] < 0.95


def test_two_separate_lobes_are_one_nucleus_with_two_lobes():
    image = canvas()
    disc(image, SIZE // 2, SIZE // 2 - 30, 22, PURPLE)
    disc(image, SIZE // 2, SIZE // 2 + 30, 22, PURPLE)
    m = values(image)
    assert m["nucleus_components"] == 2.0
    assert m["nucleus_lobes"] == 2.0
    assert m["nucleus_area"] == pytest.approx(2 * np.pi * 22**2 / SIZE**2, rel=0.08)


def test_three_lobes_joined_by_thin_filaments():
    image = canvas()
    for cx in (SIZE // 2 - 50, SIZE // 2, SIZE // 2 + 50):
        disc(image, SIZE // 2, cx, 18, PURPLE)
    image[SIZE // 2 - 2:SIZE // 2 + 3, SIZE // 2 - 50:SIZE // 2 + 50] = PURPLE
    assert values(image)["nucleus_lobes"] == 3.0


def test_nucleus_to_cell_ratio_of_disc_in_cytoplasm():
    image = disc(canvas(), SIZE // 2, SIZE // 2, 60, LILAC)
    disc(image, SIZE // 2, SIZE // 2, 30, PURPLE)
    m = values(image)
    assert m["cytoplasm_found"] == 1.0
    assert m["nucleus_to_cell"] == pytest.approx(0.25, abs=0.03)
    assert m["cell_area"] == pytest.approx(np.pi * 60**2 / SIZE**2, rel=0.06)
    assert m["rest_b_mean"] == pytest.approx(LILAC[2] / 255, abs=0.02)


def test_colour_comes_from_the_cell_not_the_background():
    """The same cell on a pale and on a blue-grey slide: cell colour is unchanged,
    whole-crop colour is not."""
    cells = []
    for background in (PALE, (200, 205, 225)):
        image = disc(canvas(background), SIZE // 2, SIZE // 2, 60, LILAC)
        cells.append(disc(image, SIZE // 2, SIZE // 2, 30, PURPLE))
    cell = [d.describe(x, "cell")[d.COLOUR_SLICE] for x in cells]
    crop = [d.describe(x, "crop")[d.COLOUR_SLICE] for x in cells]
    assert np.abs(cell[0] - cell[1]).max() < 0.02
    assert np.abs(crop[0] - crop[1]).max() > 0.3


def test_chromatin_texture_tells_smooth_from_coarse():
    rng = np.random.default_rng(0)
    smooth = disc(canvas(), SIZE // 2, SIZE // 2, 40, PURPLE)
    coarse = smooth.copy()
    inside = (smooth == PURPLE).all(axis=2)
    speckle = rng.integers(-45, 46, size=(SIZE // 4, SIZE // 4, 1)).repeat(4, 0).repeat(4, 1)
    coarse[inside] = np.clip(coarse.astype(int) + speckle, 0, 255)[inside]
    m_smooth, m_coarse = values(smooth), values(coarse)
    assert m_coarse["nucleus_area"] == pytest.approx(m_smooth["nucleus_area"], rel=0.1)
    assert m_coarse["glcm_contrast"] > m_smooth["glcm_contrast"] + 0.5
    assert m_coarse["local_var_mean"] > m_smooth["local_var_mean"]
    assert m_coarse["chromatin_std"] > m_smooth["chromatin_std"]


@pytest.mark.parametrize("image", [
    canvas(),  # blank slide
    np.zeros((SIZE, SIZE, 3), dtype=np.uint8),  # black
    np.full((3, 2, 3), 128, dtype=np.uint8),  # tiny
    np.full((1, 1, 3), PURPLE, dtype=np.uint8),  # one purple pixel: no border band
    np.zeros((40, 40), dtype=np.uint8),  # greyscale
], ids=["blank", "black", "tiny", "one-pixel", "grey"])
def test_no_nucleus_gives_flagged_finite_vector(image):
    m = values(image)
    if m["nucleus_found"] == 0.0:
        assert all(m[name] == 0.0 for name in d.MORPHOMETRY_NAMES)


def test_blank_and_red_cells_only_find_no_nucleus():
    assert values(canvas())["nucleus_found"] == 0.0
    red_cells = canvas()
    for cy, cx in ((60, 60), (60, 190), (190, 120)):
        disc(red_cells, cy, cx, 35, (215, 165, 160))
    assert values(red_cells)["nucleus_found"] == 0.0


def test_rejects_non_images():
    with pytest.raises(ValueError):
        d.describe(np.zeros((4, 4, 3)), region="nowhere")
    with pytest.raises(ValueError):
        d.describe(np.zeros((0, 4, 3)))


def _write(path, array):
    Image.fromarray(array).save(path)
    return path


def test_compute_many_with_progress_and_failures(tmp_path):
    good = _write(tmp_path / "a.png", disc(canvas(), SIZE // 2, SIZE // 2, 40, PURPLE))
    blank = _write(tmp_path / "b.png", canvas())
    broken = tmp_path / "c.png"
    broken.write_bytes(b"not an image")
    seen, failures = [], []
    feats, ok = d.compute_descriptors([good, broken, tmp_path / "missing.png", blank],
                                      progress=lambda done, total: seen.append((done, total)),
                                      failures=failures)
    assert feats.shape == (4, d.DESCRIPTOR_DIM)
    assert ok.tolist() == [True, False, False, True]
    assert [i for i, _ in failures] == [1, 2]
    assert "file not found" in failures[1][1]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.isfinite(feats).all()
    assert not feats[1].any()
    # a file gives what describe() gives on its pixels (a PNG is lossless)
    name = d.FEATURE_NAMES.index("nucleus_area")
    assert feats[0, name] == pytest.approx(np.pi * 40**2 / SIZE**2, rel=0.05)


def test_cached_descriptors_compute_once_then_read(tmp_path):
    paths = [_write(tmp_path / f"{i}.png", disc(canvas(), SIZE // 2, SIZE // 2, 20 + 10 * i, PURPLE))
             for i in range(3)]
    shas = [f"{i:064x}" for i in range(3)]
    store = FeatureStore(tmp_path / "features", d.descriptor_key())
    first, ok = d.cached_descriptors(store, shas, paths)
    assert ok.all()
    for p in paths:
        p.unlink()  # a second call must not need the images any more
    calls = []
    second, ok2 = d.cached_descriptors(store, shas, paths, progress=lambda *a: calls.append(a))
    assert ok2.all() and calls == []
    np.testing.assert_array_equal(first, second)
    # an unknown image (and a missing file) is computed, recorded as a failure, not stored
    failures = []
    third, ok3 = d.cached_descriptors(store, [*shas, "f" * 64], [*paths, tmp_path / "gone.png"],
                                      failures=failures)
    assert ok3.tolist() == [True, True, True, False]
    assert failures and failures[0][0] == 3
    assert not third[3].any()
    assert not store.get_many(["f" * 64], d.DESCRIPTOR_DIM)[1][0]  # the failure was not cached
    with pytest.raises(ValueError):
        d.cached_descriptors(FeatureStore(tmp_path, "random-s0-tf2-75"), shas, paths)


def test_module_imports_no_tensorflow_celery_or_sqlalchemy():
    code = ("import sys, worker.ml.descriptors; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'celery', 'sqlalchemy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


DEMO = Path(__file__).resolve().parents[2] / "webapp" / "demo" / "pbc"


def test_real_cells_from_the_bundled_demo_set():
    """Eight real PBC cells per class: what a haematologist would expect holds,
    and the descriptors alone tell the classes apart far above chance."""
    classes = sorted(p.name for p in DEMO.iterdir() if p.is_dir())
    paths = [p for c in classes for p in sorted((DEMO / c).iterdir())[:8]]
    y = np.array([classes.index(p.parent.name) for p in paths])
    feats, ok = d.compute_descriptors(paths)
    assert ok.all() and np.isfinite(feats).all()
    col = {name: feats[:, i] for i, name in enumerate(d.FEATURE_NAMES)}
    assert (col["nucleus_found"] == 1).all()

    def median(name, cls):
        return float(np.median(col[name][y == classes.index(cls)]))

    # a platelet is the smallest thing here; a monocyte's nucleus is larger than a lymphocyte's
    for other in set(classes) - {"platelet"}:
        assert median("nucleus_area", "platelet") < median("nucleus_area", other)
        assert median("cell_area", "platelet") < median("cell_area", other)
    assert median("nucleus_area", "monocyte") > median("nucleus_area", "lymphocyte")
    # eosinophils are bilobed, lymphocytes are not; a lymphocyte's nucleus fills its cell
    assert median("nucleus_lobes", "eosinophil") >= 2 > median("nucleus_lobes", "lymphocyte")
    assert median("nucleus_to_cell", "lymphocyte") > median("nucleus_to_cell", "monocyte")
    # leave-one-out nearest neighbour on standardised descriptors (chance: 1/8)
    z = (feats - feats.mean(0)) / np.where(feats.std(0) > 1e-8, feats.std(0), 1)
    dist = ((z[:, None] - z[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (y[dist.argmin(1)] == y).mean() > 0.5  # 0.67 when written
