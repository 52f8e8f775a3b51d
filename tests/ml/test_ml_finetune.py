"""Phase 2 of training and what it relies on: unfreezing InceptionV3's top blocks,
fine-tuning at a low rate on the tf.data pipeline, warm-starting the head, and the
mixed-precision switch.  One InceptionV3 (75 px, random init) for the whole module."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

import keras

from tests.ml.cells import write_disk_image
from worker.ml import precision
from worker.ml.backend import CellClassifier
from worker.ml.data import load_image
from worker.ml.finetune import BLOCKS, unfreeze_top_blocks
from worker.ml.network import BACKBONE_LAYER, HEAD_LAYER
from worker.ml.pipeline import image_dataset
from worker.ml.train import (
    fold_standardisation, train_head, unfold_standardisation,
)

pytestmark = pytest.mark.slow

SIZE = 75
DEMO = Path(__file__).resolve().parents[2] / "webapp" / "demo" / "pbc"
COLOURS = [(200, 30, 30), (40, 40, 200)]




@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Eight synthetic 75 px cells, two classes alternating."""
    folder = tmp_path_factory.mktemp("cells")
    paths = [write_disk_image(folder / f"cell{i}.png", COLOURS[i % 2], size=SIZE, seed=i)
             for i in range(8)]
    return paths, np.arange(8) % 2


@pytest.fixture(scope="module")
def classifier():
    clf, warnings = CellClassifier.create([11, 22], SIZE, "none", seed=0)
    assert warnings == []
    return clf


@pytest.fixture
def model(classifier):
    """The module's model, frozen again whatever a test did to it."""
    yield classifier.model
    unfreeze_top_blocks(classifier.model, 0)


def _backbone(model):
    return model.get_layer(BACKBONE_LAYER)


def _has_weights(layer) -> bool:
    return bool(layer.weights)


def _trainable_backbone_layers(model) -> list[str]:
    return [layer.name for layer in _backbone(model).layers
            if layer.trainable and _has_weights(layer)]


def _convs(model) -> list[keras.layers.Conv2D]:
    return [layer for layer in _backbone(model).layers if isinstance(layer, keras.layers.Conv2D)]


# --- unfreeze_top_blocks ---------------------------------------------------------------

def test_zero_blocks_leaves_the_backbone_frozen(model):
    unfreeze_top_blocks(model, 0)
    assert not _backbone(model).trainable
    assert _trainable_backbone_layers(model) == []
    # Only the head trains.
    assert [w.path for w in model.trainable_weights] == [f"{HEAD_LAYER}/kernel",
                                                         f"{HEAD_LAYER}/bias"]


def test_two_blocks_unfreeze_exactly_what_follows_mixed8(model):
    n = unfreeze_top_blocks(model, 2)
    assert n == len(model.trainable_weights)
    layers = _backbone(model).layers
    boundary = [layer.name for layer in layers].index("mixed8")
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif _has_weights(layer):
            assert layer.trainable == (i > boundary), (i, layer.name)
    top_convs = [c for c in _convs(model) if layers.index(c) > boundary]
    assert top_convs and all(c.trainable for c in top_convs)
    # Convolutions have no bias in InceptionV3: one kernel each, plus the head's two.
    assert n == len(top_convs) + 2
    assert not any(c.trainable for c in _convs(model) if layers.index(c) < boundary)


def test_all_blocks_unfreeze_the_whole_backbone_but_batchnorm(model):
    n = unfreeze_top_blocks(model, BLOCKS)
    assert BLOCKS == 11
    for layer in _backbone(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable and all(not w.trainable for w in layer.weights)
        elif _has_weights(layer):
            assert layer.trainable, layer.name
    assert n == len(_convs(model)) + 2 == len(model.trainable_weights)
    # Freezing again really freezes everything in the backbone.
    unfreeze_top_blocks(model, 0)
    assert _trainable_backbone_layers(model) == [] and len(model.trainable_weights) == 2


def test_more_blocks_unfreeze_more(model):
    counts = [unfreeze_top_blocks(model, n) for n in (1, 2, 5, 11)]
    assert counts == sorted(counts) and len(set(counts)) == 4


@pytest.mark.parametrize("bad", [-1, 12, 100])
def test_bad_block_count_is_refused(model, bad):
    with pytest.raises(ValueError, match="0..11"):
        unfreeze_top_blocks(model, bad)
    assert _trainable_backbone_layers(model) == []


# --- the tf.data pipeline ------------------------------------------------------------------

def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return xs, ys


def test_image_dataset_without_augmentation_is_ordered_and_repeatable(cells):
    paths, labels = cells
    ds = image_dataset(paths[:5], labels[:5], SIZE, 2, augment=False, shuffle=False)
    xs, ys = _batches(ds)
    assert [x.shape for x in xs] == [(2, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (1, SIZE, SIZE, 3)]
    assert all(x.dtype == np.float32 for x in xs)
    assert np.concatenate(ys).tolist() == labels[:5].tolist()  # input order kept
    images = np.concatenate(xs)
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Exactly InceptionV3's preprocessing of each file, in order.
    for i, path in enumerate(paths[:5]):
        np.testing.assert_allclose(images[i], load_image(path, SIZE), atol=1e-5)
    again = np.concatenate(_batches(ds)[0])
    np.testing.assert_array_equal(again, images)


def test_image_dataset_with_augmentation_stays_in_range_and_changes_images(cells):
    paths, labels = cells
    plain = np.concatenate(_batches(
        image_dataset(paths, labels, SIZE, 4, augment=False, shuffle=False))[0])
    xs, ys = _batches(image_dataset(paths, labels, SIZE, 4, augment=True, shuffle=False))
    augmented = np.concatenate(xs)
    assert augmented.shape == (8, SIZE, SIZE, 3) and augmented.dtype == np.float32
    assert np.isfinite(augmented).all()
    assert augmented.min() >= -1.0 - 1e-6 and augmented.max() <= 1.0 + 1e-6
    assert np.concatenate(ys).tolist() == labels.tolist()
    assert not np.allclose(augmented, plain, atol=1e-3)


def test_image_dataset_shuffles_labels_with_their_images(cells):
    paths, labels = cells
    ds = image_dataset(paths, np.arange(8), SIZE, 3, augment=False, shuffle=True, seed=3)
    xs, ys = _batches(ds)
    order = np.concatenate(ys)
    assert sorted(order.tolist()) == list(range(8))
    images = np.concatenate(xs)
    for row, i in enumerate(order):
        np.testing.assert_allclose(images[row], load_image(paths[i], SIZE), atol=1e-5)


def test_fine_tuning_sees_the_pixels_feature_extraction_sees():
    """Phase 2 trains the backbone on image_dataset's pixels; features, scoring and
    suggestions come from data.load_image's.  Real cells are larger than the input
    (PBC: 360 x 363), so both must shrink them the same way, or the fine-tuned
    backbone is trained on differently resampled images than it is used on."""
    paths = sorted((DEMO / "neutrophil").iterdir())[:4]
    assert Image.open(paths[0]).size[0] > 4 * SIZE
    xs, _ = _batches(image_dataset(paths, np.zeros(4), SIZE, 4, augment=False, shuffle=False))
    for image, path in zip(xs[0], paths):
        # JPEG decoders differ by a grey level or two; resampling must not.
        apart = float(np.abs(image - load_image(path, SIZE)).max())
        assert apart < 0.05, f"{path.name}: pixels up to {apart:.2f} apart on [-1, 1]"


# --- fine_tune ------------------------------------------------------------------------------

def test_fine_tune_moves_only_the_top_blocks_and_freezes_again(classifier, cells):
    paths, labels = cells
    model = classifier.model
    layers = _backbone(model).layers
    names = [layer.name for layer in layers]
    top_conv = _convs(model)[-1]
    low_conv = _convs(model)[0]
    assert names.index(top_conv.name) > names.index("mixed9")
    bn = next(layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization))
    before = {
        "top": top_conv.kernel.numpy().copy(), "low": low_conv.kernel.numpy().copy(),
        "bn": [w.numpy().copy() for w in bn.weights],
        "head": [w.copy() for w in model.get_layer(HEAD_LAYER).get_weights()],
    }
    features_before, _ = classifier.features(paths, batch_size=8)
    seen = []

    # (Validation and early stopping are exercised by tests/test_training.py's round.)
    history = classifier.fine_tune(
        paths, labels, [], labels[:0], blocks=1, epochs=1, batch_size=4,
        progress=lambda ep, total, logs: seen.append((ep, total, sorted(logs))), seed=0)

    assert len(history["loss"]) == 1 and "val_loss" not in history
    assert seen == [(1, 1, sorted(history))]
    assert not np.array_equal(top_conv.kernel.numpy(), before["top"])
    np.testing.assert_array_equal(low_conv.kernel.numpy(), before["low"])
    for w, b in zip(bn.weights, before["bn"]):
        np.testing.assert_array_equal(w.numpy(), b)  # BatchNorm neither trained nor updated
    assert not np.array_equal(model.get_layer(HEAD_LAYER).get_weights()[0], before["head"][0])
    # Frozen again for inference and saving.
    assert not _backbone(model).trainable
    assert _trainable_backbone_layers(model) == [] and len(model.trainable_weights) == 2
    # The feature extractor follows the fine-tuned backbone.
    features_after, ok = classifier.features(paths, batch_size=8)
    assert ok.all() and not np.array_equal(features_after, features_before)


# --- warm-starting the head ----------------------------------------------------------------

def _features(n=40, dim=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = rng.normal(5.0, 3.0, (n, dim)).astype(np.float32)
    x[np.arange(n), labels] += 15.0
    return x, labels


def test_unfold_standardisation_inverts_fold():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(16, 3)), rng.normal(size=3)
    mean, std = rng.normal(size=16), rng.uniform(0.5, 3.0, size=16)
    folded = fold_standardisation(kernel, bias, mean, std)
    unfolded = unfold_standardisation(*folded, mean, std)
    np.testing.assert_allclose(unfolded[0], kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unfolded[1], bias, rtol=1e-5, atol=1e-5)
    # And the other way round.
    refolded = fold_standardisation(*unfold_standardisation(kernel, bias, mean, std), mean, std)
    np.testing.assert_allclose(refolded[0], kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(refolded[1], bias, rtol=1e-5, atol=1e-5)
    # Same logits on raw features as the original weights on standardised ones.
    x = rng.normal(size=(5, 16))
    np.testing.assert_allclose(x @ folded[0] + folded[1],
                               ((x - mean) / std) @ kernel + bias, rtol=1e-4, atol=1e-4)


def test_train_head_warm_start_begins_from_the_given_head():
    x, y = _features()
    no_validation = (x[:0], y[:0])

    def accuracy(w):
        return ((x @ w[0] + w[1]).argmax(1) == y).mean()

    # A head that knows the classes (e.g. the active model's): class k shows in feature k.
    kernel = np.zeros((16, 3), dtype=np.float32)
    kernel[np.arange(3), np.arange(3)] = 1.0
    good = [kernel, np.zeros(3, dtype=np.float32)]
    assert accuracy(good) == 1.0
    # The fit starts from the given head: after one epoch (a few L-BFGS steps) a
    # warm start is already at a lower loss than a cold one, which starts at zero.
    warm = train_head(x, y, 3, epochs=1, initial=good, validation=no_validation, seed=5)
    cold = train_head(x, y, 3, epochs=1, validation=no_validation, seed=5)
    assert warm.history["loss"][0] < cold.history["loss"][0]
    assert accuracy(warm.weights) == 1.0
    # Both end at the same optimum given the epochs: the problem is convex.
    warm = train_head(x, y, 3, epochs=100, initial=good, validation=no_validation, seed=5)
    cold = train_head(x, y, 3, epochs=100, validation=no_validation, seed=5)
    np.testing.assert_allclose(warm.weights[0], cold.weights[0], atol=1e-2)


# --- precision ------------------------------------------------------------------------------

@pytest.fixture
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def test_precision_off_and_bad_values(restore_policy):
    assert precision.configure("off") == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert precision.configure("on") == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    expected = "mixed_float16" if precision.gpu_count() else "float32"
    assert precision.configure("auto") == expected
    assert keras.mixed_precision.global_policy().name == expected
    for bad in ("yes", "", "float16"):
        with pytest.raises(ValueError, match="auto, on or off"):
            precision.configure(bad)
    assert keras.mixed_precision.global_policy().name == expected  # unchanged by a refusal
