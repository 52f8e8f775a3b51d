"""The Keras side: network, feature extraction, CellClassifier. Builds InceptionV3
at 75 px with random weights (ImageNet cannot be downloaded here), once per
module where possible."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

import h5py
import keras

from worker.ml.backend import CellClassifier
from worker.ml.network import FEATURE_DIM, backbone_of, build_classifier
from worker.ml.weights import WeightsError
from tests.ml.cells import write_disk_image

pytestmark = pytest.mark.slow

SIZE = 75
COLOURS = [(200, 30, 30), (30, 160, 30), (40, 40, 200)]  # one class per colour




@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(paths, labels) for 12 good images, plus a corrupt file at index 2 and a
    missing one at index 7 (label -1)."""
    folder = tmp_path_factory.mktemp("cells")
    paths, labels = [], []
    for i in range(12):
        label = i % 3
        paths.append(write_disk_image(folder / f"cell{i}.png", COLOURS[label], seed=i))
        labels.append(label)
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(500))
    paths.insert(2, corrupt)
    labels.insert(2, -1)
    paths.insert(7, folder / "missing.png")
    labels.insert(7, -1)
    return paths, np.array(labels)


@pytest.fixture(scope="module")
def classifier():
    clf, warnings = CellClassifier.create([11, 22, 33], SIZE, "none", seed=0)
    assert warnings == []
    return clf


def test_classifier_structure(classifier):
    model = classifier.model
    assert model.output.shape == (None, 3)
    assert model.input.shape == (None, SIZE, SIZE, 3)
    assert [layer.name for layer in model.layers[1:]] == ["backbone", "gap", "dropout", "head"]
    assert model.get_layer("head").dtype == "float32"
    assert classifier.backbone_weights == "none"
    extractor = backbone_of(model)
    assert extractor.output.shape == (None, FEATURE_DIM)
    # shares weights rather than copying them
    assert extractor.get_layer("backbone") is model.get_layer("backbone")


def test_build_classifier_validates_arguments():
    with pytest.raises(ValueError, match="input_size"):
        build_classifier(3, 74, None)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(1, SIZE, None)


def test_features_skip_bad_images_and_report_progress(classifier, images):
    paths, labels = images
    failures, progress = [], []
    features, ok = classifier.features(
        paths, batch_size=5, progress=lambda d, t: progress.append((d, t)), failures=failures
    )

    assert features.shape == (len(paths), FEATURE_DIM) and features.dtype == np.float32
    np.testing.assert_array_equal(ok, labels >= 0)
    assert sorted(i for i, _ in failures) == [2, 7]
    assert not features[~ok].any()
    assert np.isfinite(features).all() and features[ok].any(axis=1).all()
    assert progress[-1] == (len(paths), len(paths))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_head_predictions_from_features_match_the_full_model(classifier, images):
    paths, labels = images
    features, ok = classifier.features(paths, batch_size=8)
    result = classifier.fit_head(features[ok], labels[ok], epochs=20)
    assert 1 <= result.epochs_run <= 20
    installed = classifier.model.get_layer("head").get_weights()
    np.testing.assert_array_equal(installed[0], result.weights[0])

    from_features = classifier.predict_features(features[ok], batch_size=5)
    probs, predicted_ok = classifier.predict(paths, batch_size=8)

    np.testing.assert_array_equal(predicted_ok, ok)
    assert from_features.dtype == np.float32 and from_features.shape == (ok.sum(), 3)
    np.testing.assert_allclose(from_features.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_features, probs[ok], atol=1e-4)
    assert not probs[~ok].any()
    # Even a random-init backbone's features separate the colours once the
    # head trains on standardised features.
    assert (from_features.argmax(axis=1) == labels[ok]).mean() > 0.8


def test_save_and_load_round_trip(classifier, images, tmp_path):
    paths, _ = images
    target = tmp_path / "round" / "model.keras"
    target.parent.mkdir()
    classifier.save(target)
    classifier.save(target)  # overwriting works too

    assert sorted(p.name for p in target.parent.iterdir()) == ["model.json", "model.keras"]
    loaded = CellClassifier.load(target)
    assert loaded.class_ids == [11, 22, 33]
    assert loaded.input_size == SIZE
    assert loaded.backbone_weights == "none"
    before, _ = classifier.predict(paths, batch_size=8)
    after, _ = loaded.predict(paths, batch_size=8)
    np.testing.assert_allclose(after, before, atol=1e-6)

    with pytest.raises(ValueError, match=".keras"):
        classifier.save(tmp_path / "model.h5")


def test_backbone_weights_file_round_trip_and_mismatch(classifier, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format

    backbone = classifier.model.get_layer("backbone")
    good = tmp_path / "backbone.h5"  # legacy layout, like Keras' ImageNet file
    with h5py.File(good, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="tiny")])
    wrong = tmp_path / "tiny_model.h5"
    with h5py.File(wrong, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, other)

    with pytest.raises(WeightsError, match="tiny_model.h5"):
        build_classifier(3, SIZE, str(wrong))

    rebuilt = build_classifier(3, SIZE, str(good), seed=123)
    rebuilt_weights = rebuilt.get_layer("backbone").get_weights()
    for expected, actual in zip(backbone.get_weights(), rebuilt_weights):
        np.testing.assert_array_equal(actual, expected)


def test_imagenet_download_failure_is_a_weights_error(monkeypatch):
    from worker.ml import network

    def offline(timeout):
        raise Exception(
            "URL fetch failure on https://example/x.h5: None -- [Errno -2] Name or service not known"
        )

    monkeypatch.setattr(network, "fetch_imagenet_notop", offline)
    expected = r"could not be downloaded \(\[Errno -2\] Name or service not known\)"
    with pytest.raises(WeightsError, match=expected):
        build_classifier(3, SIZE, "imagenet")
