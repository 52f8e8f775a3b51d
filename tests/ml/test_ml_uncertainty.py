import math

import numpy as np
import pytest

from worker.ml.uncertainty import uncertainty_scores


def test_scores_on_known_vectors():
    probs = np.array(
        [
            [1.0, 0.0, 0.0],  # certain
            [1 / 3, 1 / 3, 1 / 3],  # maximally uncertain
            [0.6, 0.3, 0.1],
        ]
    )
    s = uncertainty_scores(probs)

    np.testing.assert_allclose(s["confidence"], [1.0, 1 / 3, 0.6])
    np.testing.assert_allclose(s["least_confidence"], [0.0, 2 / 3, 0.4])
    np.testing.assert_allclose(s["margin"], [1.0, 0.0, 0.3], atol=1e-12)
    expected_entropy = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(s["entropy"], [0.0, math.log(3), expected_entropy], atol=1e-9)
    assert all(v.shape == (3,) for v in s.values())


def test_margin_is_smaller_for_the_more_uncertain_row():
    s = uncertainty_scores(np.array([[0.9, 0.1], [0.55, 0.45]]))
    assert s["margin"][1] < s["margin"][0]
    assert s["entropy"][1] > s["entropy"][0]


def test_empty_and_malformed_input():
    s = uncertainty_scores(np.zeros((0, 4)))
    assert all(v.shape == (0,) for v in s.values())
    with pytest.raises(ValueError):
        uncertainty_scores(np.array([0.5, 0.5]))
