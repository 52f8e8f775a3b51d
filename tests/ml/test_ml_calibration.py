"""Temperature scaling and expected calibration error (NumPy only)."""

import numpy as np
import pytest

from worker.ml.calibration import (
    T_MAX, T_MIN, expected_calibration_error, fit_temperature, nll, softmax,
)


def _sample_labels(logits: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Labels drawn from softmax(logits / temperature): calibrated at that temperature."""
    rng = np.random.default_rng(seed)
    p = softmax(logits, temperature).astype(np.float64)
    cumulative = p.cumsum(axis=1)
    u = rng.random((len(p), 1))
    return np.minimum((u > cumulative).sum(axis=1), p.shape[1] - 1)


def _logits(n=4000, k=5, scale=4.0, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (n, k)).astype(np.float32)


def test_softmax_with_temperature():
    logits = np.array([[2.0, 0.0, -1.0], [1000.0, 999.0, 0.0]])
    p = softmax(logits)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    e = np.exp([2.0, 0.0, -1.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1][:2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))],
                               rtol=1e-6)  # large logits: no overflow
    np.testing.assert_allclose(softmax(logits, 2.0), softmax(logits / 2.0), rtol=1e-6)
    # A higher temperature flattens, a lower one sharpens; the ranking stays.
    assert softmax(logits, 3.0)[0].max() < p[0].max() < softmax(logits, 0.5)[0].max()
    assert (softmax(logits, 3.0).argmax(1) == p.argmax(1)).all()


@pytest.mark.parametrize("true_t", [2.5, 0.6])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    logits = _logits(seed=1)
    labels = _sample_labels(logits, true_t, seed=2)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.15)
    # It is the minimum of the validation NLL, and beats no scaling.
    assert nll(logits, labels, t) <= nll(logits, labels, t * 1.1)
    assert nll(logits, labels, t) <= nll(logits, labels, t / 1.1)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)


def test_calibrated_logits_keep_temperature_one():
    logits = _logits(seed=3)
    labels = _sample_labels(logits, 1.0, seed=4)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.15)


def test_fit_temperature_stays_in_its_bounds():
    logits = _logits(n=200, seed=5)
    # Labels always the top class: the sharper the better -> lowest bound.
    assert fit_temperature(logits, logits.argmax(1)) == pytest.approx(T_MIN, rel=0.05)
    # Labels never the top class: as flat as allowed -> highest bound.
    assert fit_temperature(logits, logits.argmin(1)) == pytest.approx(T_MAX, rel=0.05)


def test_fit_temperature_without_data_is_one():
    assert fit_temperature(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64)) == 1.0
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0


def test_temperature_scaling_lowers_the_calibration_error():
    logits = _logits(seed=6)
    labels = _sample_labels(logits, 2.5, seed=7)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert before > 0.1 and after < 0.03


# --- expected calibration error on hand-computed cases -----------------------------------

def _two_class(confidence: float, n: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """n cells predicted class 0 with this confidence; the first n_correct really are 0."""
    probs = np.tile([confidence, 1 - confidence], (n, 1))
    labels = np.array([0] * n_correct + [1] * (n - n_correct))
    return probs, labels


def test_ece_of_a_perfectly_calibrated_model_is_zero():
    probs, labels = _two_class(0.8, 10, 8)  # 80 % sure, right 8 times in 10
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)
    # Two bins, each calibrated on its own.
    p2, l2 = _two_class(0.6, 5, 3)
    assert expected_calibration_error(np.vstack([probs, p2]),
                                      np.concatenate([labels, l2])) == pytest.approx(0.0, abs=1e-9)


def test_ece_of_an_overconfident_model():
    probs, labels = _two_class(0.9, 10, 6)  # 90 % sure, right 6 times in 10
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    probs, labels = _two_class(1.0, 4, 0)  # certain and always wrong
    assert expected_calibration_error(probs, labels) == pytest.approx(1.0)


def test_ece_weights_bins_by_their_size():
    # 4 cells at 95 %: 3 right (gap 0.2); 6 cells at 65 %: 4 right (gap 1/60).
    high, high_labels = _two_class(0.95, 4, 3)
    low, low_labels = _two_class(0.65, 6, 4)
    probs = np.vstack([high, low])
    labels = np.concatenate([high_labels, low_labels])
    expected = 0.4 * 0.2 + 0.6 * abs(4 / 6 - 0.65)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    # The order of the cells does not matter.
    order = np.random.default_rng(0).permutation(10)
    assert expected_calibration_error(probs[order], labels[order]) == pytest.approx(expected)
    # One bin only: the two groups' errors partly cancel.
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(
        abs(7 / 10 - (4 * 0.95 + 6 * 0.65) / 10))


def test_ece_of_nothing_is_zero():
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 0.0
