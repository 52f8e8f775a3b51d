import json

import numpy as np
import pytest

from worker.ml.evaluate import classification_metrics


def test_metrics_match_hand_computed_example():
    # true: a a a b b c ; pred: a a b b c c
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])

    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["class_names"] == ["a", "b", "c"]
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"], c["support"]) == (0.5, 1.0, 1)
    assert c["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    json.dumps(m)  # must be JSON-serialisable as is


def test_macro_f1_ignores_classes_absent_from_truth_and_predictions():
    m = classification_metrics(np.array([0, 1]), np.array([0, 0]), ["a", "b", "never"])
    # a: p=0.5 r=1 f1=2/3 ; b: p=0 (zero division) r=0 f1=0 ; "never" left out
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["never"]["support"] == 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_empty_input_gives_none_not_nan():
    m = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert m["n"] == 0
    assert m["accuracy"] is None
    assert m["macro_f1"] is None
    assert m["confusion_matrix"] == [[0, 0], [0, 0]]
    assert m["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    json.dumps(m)


def test_rejects_out_of_range_and_mismatched_inputs():
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 2]), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.array([0]), ["a", "b"])
