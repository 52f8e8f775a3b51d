"""One head fit for rounds and the simulator (worker/ml/head.py)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

from worker.ml.backend import CellClassifier
from worker.ml.head import (
    HEAD_DROPOUT,
    HeadFit,
    fit_calibrated_head,
    temperature,
    validation_split,
)
from worker.ml.train import head_model
from worker.simulation.loop import HeadConfig, train_round_head


def noisy_features(n_per_class, num_classes=3, dim=2048, seed=0):
    """Classes that show in a few coordinates under noise: separable, not perfectly."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    features = rng.normal(0.0, 1.0, (len(labels), dim)).astype(np.float32)
    features[np.arange(len(labels)), labels] += 1.5
    return features, labels


def head_only_classifier():
    """A real CellClassifier whose model is the head alone (the part fit_head trains),
    so the test needs no backbone."""
    return CellClassifier(head_model(2048, 3, HEAD_DROPOUT), [11, 22, 33], 75)


@pytest.mark.parametrize("n_per_class", [40, 120])  # 18 validation cells; 54 (early stopping)
def test_rounds_and_the_simulator_fit_the_same_head(n_per_class):
    features, labels = noisy_features(n_per_class)
    clf = head_only_classifier()
    # What a round calls (worker/training.py's train_head step) ...
    round_head = clf.fit_head(features, labels, epochs=12, seed=5)
    # ... and what the simulator calls, on the same cells with the same settings.
    sim_head = train_round_head(features, labels, 3, HeadConfig(epochs=12, batch_size=16),
                                seed=5)

    np.testing.assert_array_equal(round_head.weights[0], sim_head.kernel)
    np.testing.assert_array_equal(round_head.weights[1], sim_head.bias)
    assert round_head.temperature == sim_head.temperature
    assert len(round_head.val) > 0 and round_head.temperature != 1.0  # really calibrated
    np.testing.assert_array_equal(clf.model.get_layer("head").get_weights()[0],
                                  round_head.weights[0])


def test_the_fit_holds_out_the_validation_split_and_calibrates_on_it():
    features, labels = noisy_features(40)
    head = fit_calibrated_head(features, labels, 3, HeadFit(epochs=5), seed=2)
    fit, val = validation_split(labels, 2)
    np.testing.assert_array_equal(head.fit, fit)
    np.testing.assert_array_equal(head.val, val)
    assert "val_loss" in head.history and 1 <= head.epochs_run <= 5
    # The temperature and the validation logits are the held-out head's ...
    np.testing.assert_allclose(head.val_logits.shape, (len(val), 3))
    assert head.temperature == temperature(head.val_logits, labels[val])
    held_out = fit_calibrated_head(features, labels, 3, HeadFit(epochs=5), seed=2, refit=False)
    np.testing.assert_array_equal(held_out.val_logits, head.val_logits)
    kernel, bias = held_out.weights
    np.testing.assert_allclose(features[val] @ kernel + bias, head.val_logits, rtol=1e-5,
                               atol=1e-5)
    assert not held_out.refitted and held_out.temperature == head.temperature


def test_the_published_head_is_refitted_on_every_label():
    """Validation cells are labels too: once they have given the temperature, the
    head is fitted again with them (warm-started), and it fits them better."""
    features, labels = noisy_features(40)
    head = fit_calibrated_head(features, labels, 3, HeadFit(epochs=30), seed=2)
    held_out = fit_calibrated_head(features, labels, 3, HeadFit(epochs=30), seed=2, refit=False)
    assert head.refitted and not np.array_equal(head.weights[0], held_out.weights[0])
    val = head.val

    def val_loss(weights):
        logits = features[val] @ weights[0] + weights[1]
        logits = logits - logits.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(val)),
                                                                      labels[val]]))

    assert val_loss(head.weights) < val_loss(held_out.weights)


def test_too_few_labels_train_on_all_and_stay_uncalibrated():
    features, labels = noisy_features(5)  # 15 labels: no validation split
    head = fit_calibrated_head(features, labels, 3, HeadFit(epochs=3), seed=0)
    assert len(head.val) == 0 and len(head.fit) == 15
    assert head.temperature == 1.0 and "val_loss" not in head.history
