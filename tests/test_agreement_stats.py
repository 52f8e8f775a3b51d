"""The agreement statistics against textbook worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.curate.agreement import (cohen_kappa, fleiss_kappa, fleiss_kappa_per_category,
                                     krippendorff_alpha, krippendorff_alpha_per_category)

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_cohen_kappa_wikipedia_example():
    # 50 grant proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # nothing to agree about
    with pytest.raises(ValueError):
        cohen_kappa(["x"], [])


def test_fleiss_kappa_wikipedia_example():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=1e-4)
    per = fleiss_kappa_per_category(FLEISS_TABLE)
    # Category-wise kappas follow the same formula; the overall one is their weighted mean.
    p = FLEISS_TABLE.sum(axis=0) / FLEISS_TABLE.sum()
    weights = p * (1 - p)
    assert sum(k * w for k, w in zip(per, weights)) / weights.sum() == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_krippendorff_alpha_reliability_data_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers,
    # 12 units, missing values; nominal alpha = 0.743.
    rows = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[r[u] for r in rows if r[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=1e-3)
    assert krippendorff_alpha([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a"], []]) is None
    assert krippendorff_alpha_per_category([["a", "a"], ["b", "b"], ["a", "b"]], "a") is not None


def test_fleiss_and_krippendorff_agree_closely_on_complete_data():
    # With the same number of readers on every cell the two differ only by a
    # small-sample correction.
    units = [[j for j, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE]
    assert krippendorff_alpha(units) == pytest.approx(fleiss_kappa(FLEISS_TABLE), abs=0.01)
