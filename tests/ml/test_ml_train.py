import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

from worker.ml.train import (
    TrainingCancelled,
    class_weights,
    fold_standardisation,
    standardisation,
    stratified_validation_split,
    train_head,
)


def separable_features(n_per_class, num_classes=3, dim=2048, seed=0):
    """Feature vectors whose class shows in a few coordinates, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    features = rng.normal(0.0, 1.0, (len(labels), dim)).astype(np.float32)
    features[np.arange(len(labels)), labels] += 4.0
    return features, labels


def test_class_weights_are_balanced_for_present_classes():
    labels = np.array([0, 0, 0, 1])  # class 2 absent
    w = class_weights(labels, 3)
    assert w == {0: pytest.approx(4 / (2 * 3)), 1: pytest.approx(4 / (2 * 1)), 2: 1.0}


def test_stratified_split_keeps_every_class_in_training():
    labels = np.array([0] * 20 + [1] * 2 + [2] * 7)
    train, val = stratified_validation_split(labels, 0.15, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert set(labels[train]) == {0, 1, 2}
    assert np.bincount(labels[val]).tolist() == [3, 1, 1]


def test_head_learns_separable_classes_without_validation():
    features, labels = separable_features(6)  # 18 labels: too few to hold out
    seen = []
    result = train_head(
        features,
        labels,
        3,
        epochs=15,
        progress=lambda e, n, logs: seen.append((e, n, logs)),
    )
    assert 1 <= result.epochs_run <= 15  # stops where the convex fit converges
    assert "val_loss" not in result.history
    assert result.history["accuracy"][-1] == 1.0
    assert len(result.history["loss"]) == result.epochs_run
    assert [e for e, _, _ in seen] == list(range(1, result.epochs_run + 1)) and seen[0][1] == 15
    assert isinstance(seen[0][2]["loss"], float)
    kernel, bias = result.weights
    assert kernel.shape == (2048, 3) and bias.shape == (3,)


def test_head_holds_out_validation_when_enough_labels_and_converges():
    features, labels = separable_features(120)  # 360 labels: 54 held out
    result = train_head(features, labels, 3, epochs=200)
    assert "val_loss" in result.history and "val_accuracy" in result.history
    assert result.epochs_run < 200  # converged well before the bound
    logits = features @ result.weights[0] + result.weights[1]
    assert (logits.argmax(axis=1) == labels).mean() > 0.8


def test_the_fit_reaches_the_optimum_of_the_penalised_loss():
    """At the returned head the penalised loss's gradient is ~0: the head is the
    regression's optimum, not wherever some epochs of a stochastic optimiser left it."""
    from worker.ml.train import class_weights, standardisation, unfold_standardisation

    features, labels = separable_features(30, dim=20, seed=4)
    features[:, :5] += np.random.default_rng(1).normal(0, 3, (len(labels), 5))  # overlap
    result = train_head(features, labels, 3, epochs=200, l2=1.0, validation=(features[:0], labels[:0]))
    mean, std = standardisation(features)
    kernel, bias = (w.astype(np.float64) for w in unfold_standardisation(*result.weights, mean, std))
    x = (features - mean) / std
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    weights = class_weights(labels, 3)
    w = np.array([weights[c] for c in labels]) / len(labels)
    residual = (p - np.eye(3)[labels]) * w[:, None]
    grad_kernel = x.T @ residual + kernel / len(labels)
    assert np.abs(grad_kernel).max() < 1e-3 and np.abs(residual.sum(0)).max() < 1e-3


def test_training_is_deterministic_for_a_seed():
    features, labels = separable_features(5)
    a = train_head(features, labels, 3, epochs=3, seed=7)
    b = train_head(features, labels, 3, epochs=3, seed=7)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


def test_should_stop_cancels_training():
    features, labels = separable_features(4)
    epochs_seen = []
    with pytest.raises(TrainingCancelled):
        train_head(
            features,
            labels,
            3,
            epochs=50,
            progress=lambda e, n, logs: epochs_seen.append(e),
            should_stop=lambda: len(epochs_seen) >= 2,
        )
    assert epochs_seen == [1, 2]
    with pytest.raises(TrainingCancelled):
        train_head(features, labels, 3, epochs=5, should_stop=lambda: True)


def test_rejects_bad_labels():
    features, labels = separable_features(2)
    with pytest.raises(ValueError):
        train_head(features, labels + 1, 3, epochs=1)
    with pytest.raises(ValueError):
        train_head(features[:0], labels[:0], 3, epochs=1)


def test_non_finite_features_are_refused_not_fitted_into_a_nan_head():
    features, labels = separable_features(4, dim=8)
    features[3, 2] = np.nan
    with pytest.raises(ValueError, match="1 feature rows hold NaN"):
        train_head(features, labels, 3, epochs=2)


def test_folded_weights_apply_to_raw_features():
    rng = np.random.default_rng(3)
    raw = rng.normal(5e-4, 3e-5, (50, 16)).astype(np.float32)
    raw[:, 3] = 0.0  # a dead unit: constant, std 0
    raw[:, 5] = np.float32(0.1)  # constant, but its float64 std may be rounding noise
    kernel = rng.normal(size=(16, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    mean, std = standardisation(raw)
    folded_kernel, folded_bias = fold_standardisation(kernel, bias, mean, std)
    expected = ((raw - mean) / std) @ kernel + bias
    np.testing.assert_allclose(raw @ folded_kernel + folded_bias, expected, rtol=1e-4, atol=1e-4)
    assert folded_kernel.dtype == np.float32 and folded_bias.dtype == np.float32
    assert std[3] == std[5] == 1.0


def test_head_learns_tiny_scaled_features():
    # Like pooled features of a randomly initialised backbone: ~1e-4 in size.
    features, labels = separable_features(6)
    features = features * 1e-5 + 3e-4
    result = train_head(features, labels, 3, epochs=15)
    logits = features @ result.weights[0] + result.weights[1]
    assert (logits.argmax(axis=1) == labels).mean() > 0.8
