"""The head on cell descriptors and on both inputs (issue 15): the network's three
shapes, fitting, prediction, save/load, phase-2 fine-tuning with the descriptor
input kept, and the stored standardisation applied the same way everywhere.

Synthetic cells: a purple nucleus in lilac cytoplasm on a pale slide, three
classes told apart by nucleus size, so the descriptors separate them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

from worker.ml.backend import CellClassifier
from worker.ml.descriptors import DESCRIPTOR_DIM, compute_descriptors
from worker.ml.feature_parts import BACKBONE, DESCRIPTORS, fit_standardisation

pytestmark = pytest.mark.slow

SIZE = 75
RADII = (14, 24, 34)  # nucleus radius per class, at 128 px
CLASS_IDS = [5, 6, 7]


def write_cell(path, radius: int, seed: int):
    rng = np.random.default_rng(seed)
    size = 128
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size // 2 + rng.integers(-4, 5, 2)
    pixels = np.full((size, size, 3), (245, 228, 205), dtype=np.uint8)
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (radius + 14) ** 2] = (205, 180, 215)
    pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = (110, 55, 150)
    noise = rng.integers(-6, 7, pixels.shape)
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """(paths, labels): 8 cells per class, plus a corrupt file at index 3 (label -1)."""
    folder = tmp_path_factory.mktemp("two-input-cells")
    paths, labels = [], []
    for i in range(24):
        label = i % 3
        paths.append(write_cell(folder / f"cell{i}.png", RADII[label], seed=i))
        labels.append(label)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    paths.insert(3, corrupt)
    labels.insert(3, -1)
    return paths, np.array(labels)


def fitted(sources: str, cells) -> tuple[CellClassifier, np.ndarray, np.ndarray]:
    """A classifier for ``sources`` with its standardisation set and its head fitted."""
    paths, labels = cells
    clf, warnings = CellClassifier.create(CLASS_IDS, SIZE, "none", seed=0, sources=sources)
    assert warnings == []
    parts, ok = clf.parts(paths, batch_size=8)
    clf.set_standardisation(fit_standardisation(sources, {k: v[ok] for k, v in parts.items()}))
    feats = clf.head_input(parts)
    clf.fit_head(feats[ok], labels[ok], epochs=40, seed=0)
    return clf, feats, ok


@pytest.fixture(scope="module")
def descriptors_only(cells):
    return fitted("descriptors", cells)


@pytest.fixture(scope="module")
def both(cells):
    return fitted("both", cells)


def test_three_shapes_take_the_inputs_their_sources_name():
    shapes = {}
    for sources in ("backbone", "descriptors", "both"):
        clf, _ = CellClassifier.create(CLASS_IDS, SIZE, "none", seed=0, sources=sources)
        shapes[sources] = (clf.sources, clf.has_image_input,
                           sorted(t.name.split(":")[0] for t in clf.model.inputs))
    assert shapes["backbone"] == ("backbone", True, ["image"])
    assert shapes["descriptors"] == ("descriptors", False, ["descriptors"])
    assert shapes["both"] == ("both", True, ["descriptors", "image"])
    descriptors_only, _ = CellClassifier.create(CLASS_IDS, SIZE, "none", sources="descriptors")
    assert descriptors_only.model.get_layer("descriptor_norm").input.shape == (None,
                                                                             DESCRIPTOR_DIM)
    assert "backbone" not in {layer.name for layer in descriptors_only.model.layers}
    with pytest.raises(ValueError, match="no backbone"):
        descriptors_only.extractor  # noqa: B018 - the property raises


def test_unknown_sources_are_refused():
    with pytest.raises(ValueError, match="feature sources must be one of"):
        CellClassifier.create(CLASS_IDS, SIZE, "none", sources="colour")


def test_descriptors_only_head_learns_and_predicts_like_its_features(descriptors_only, cells):
    clf, feats, ok = descriptors_only
    paths, labels = cells
    assert feats.shape == (len(paths), DESCRIPTOR_DIM)
    # The standardisation stored in the model was applied: the readable cells'
    # head input has mean 0 and std 1 per non-constant column.
    good = feats[ok]
    spread = good.std(axis=0) > 1e-3
    assert np.allclose(good.mean(axis=0)[spread], 0, atol=1e-4)
    assert np.allclose(good.std(axis=0)[spread], 1, atol=1e-3)
    failures = []
    probs, pred_ok = clf.predict(paths, batch_size=8, failures=failures)
    assert pred_ok.tolist() == ok.tolist() and not ok[3]
    assert failures and failures[0][0] == 3
    assert np.allclose(probs[ok], clf.predict_features(feats[ok]), atol=1e-5)
    assert (probs[ok].argmax(1) == labels[ok]).mean() >= 0.9  # a few cells are held out
    assert (probs[~ok] == 0).all()


def test_both_head_reads_backbone_and_descriptors_each_standardised(both, cells):
    clf, feats, ok = both
    paths, labels = cells
    assert feats.shape == (len(paths), 2048 + DESCRIPTOR_DIM)
    stats = clf.standardisation
    assert set(stats.mean) == {BACKBONE, DESCRIPTORS}
    raw = compute_descriptors(paths)[0]
    # The descriptor half of the head input is the raw descriptors standardised
    # with the numbers stored in the model.
    expected = (raw - stats.mean[DESCRIPTORS]) / stats.std[DESCRIPTORS]
    assert np.allclose(feats[ok][:, 2048:], expected[ok], atol=1e-4)
    # features() (images in, head input out) and predict() agree with the head on it.
    again, again_ok = clf.features(paths, batch_size=8)
    assert again_ok.tolist() == ok.tolist()
    assert np.allclose(again[ok], feats[ok], atol=1e-4)
    probs, _ = clf.predict(paths, batch_size=8)
    assert np.allclose(probs[ok], clf.predict_features(feats[ok]), atol=1e-4)
    assert (probs[ok].argmax(1) == labels[ok]).mean() >= 0.9  # a few cells are held out


def test_model_inputs_are_what_the_keras_model_takes(both, cells):
    clf, _, ok = both
    paths, _ = cells
    failures = []
    inputs, inputs_ok = clf.model_inputs(paths[:6], failures)
    assert set(inputs) == {"image", "descriptors"}
    assert inputs["image"].shape == (6, SIZE, SIZE, 3)
    assert inputs["descriptors"].shape == (6, DESCRIPTOR_DIM)
    assert inputs_ok.tolist() == ok[:6].tolist()
    assert [i for i, _ in failures] == [3]
    good = np.flatnonzero(inputs_ok)
    out = np.asarray(clf.model({k: v[good] for k, v in inputs.items()}, training=False))
    assert np.allclose(out, clf.predict(paths[:6], batch_size=4)[0][good], atol=1e-5)


@pytest.mark.parametrize("which", ["descriptors_only", "both"])
def test_save_load_round_trip_keeps_shape_standardisation_and_predictions(
        which, request, cells, tmp_path):
    clf, feats, ok = request.getfixturevalue(which)
    paths, _ = cells
    path = tmp_path / "model.keras"
    clf.save(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["feature_sources"] == clf.sources
    assert sidecar["descriptor_version"] >= 1 and len(sidecar["descriptor_names"]) == DESCRIPTOR_DIM
    loaded = CellClassifier.load(path)
    assert (loaded.sources, loaded.has_image_input) == (clf.sources, clf.has_image_input)
    for part in clf.standardisation.mean:
        assert np.array_equal(loaded.standardisation.mean[part], clf.standardisation.mean[part])
        assert np.allclose(loaded.standardisation.std[part], clf.standardisation.std[part])
    assert np.allclose(loaded.predict(paths, batch_size=8)[0], clf.predict(paths, batch_size=8)[0],
                       atol=1e-5)
    assert np.allclose(loaded.head_input(clf.parts(paths, 8)[0])[ok], feats[ok], atol=1e-4)


def test_a_model_of_another_descriptor_version_is_refused(descriptors_only, tmp_path):
    clf, _, _ = descriptors_only
    path = tmp_path / "old.keras"
    clf.save(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["descriptor_version"] = 0
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="descriptors version 0"):
        CellClassifier.load(path)


def test_fine_tuning_keeps_the_descriptor_input(cells):
    paths, labels = cells
    clf, feats, ok = fitted("both", cells)
    good = [p for p, k in zip(paths, ok) if k]
    y = labels[ok]
    before = clf.model.get_layer("descriptor_norm").get_weights()
    history = clf.fine_tune(good[:16], y[:16], good[16:], y[16:], blocks=1, epochs=1,
                            batch_size=8, seed=0)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    # Still two inputs; the descriptors' standardisation is not trained away.
    assert sorted(t.name.split(":")[0] for t in clf.model.inputs) == ["descriptors", "image"]
    after = clf.model.get_layer("descriptor_norm").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    probs, pred_ok = clf.predict(paths, batch_size=8)
    assert pred_ok.tolist() == ok.tolist()
    # The same numbers through the cached-feature path; a loose tolerance, as the
    # randomly initialised backbone's features (spread ~1e-5) are divided by their
    # std, which magnifies float32 rounding between the two forward passes.
    diff = np.abs(probs[ok] - clf.predict_features(clf.features(paths, 8)[0][ok])).max()
    assert diff < 5e-2, diff  # measured 0.004-0.021 across runs and batch sizes


def test_descriptors_only_cannot_be_fine_tuned(descriptors_only, cells):
    clf, _, ok = descriptors_only
    paths, labels = cells
    with pytest.raises(ValueError, match="no backbone"):
        clf.fine_tune(paths[:4], labels[:4], [], labels[:0], blocks=1, epochs=1, batch_size=4)
