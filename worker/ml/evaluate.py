"""Classification metrics in plain NumPy, shaped for JSON."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ratio(numerator: float, denominator: float) -> float:
    # Zero denominators mean "no evidence"; report 0.0 like scikit-learn's
    # zero_division=0 rather than NaN, which JSON cannot carry.
    return float(numerator / denominator) if denominator else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts `[true, predicted]`, int64, `num_classes` square."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix.

    `y_true` and `y_pred` hold indices into `class_names`. Macro F1 averages over
    the classes that occur in `y_true` or `y_pred` only, so classes nobody has
    labelled yet do not drag it to zero. With no examples, accuracy and
    macro F1 are None.
    """
    names = [str(name) for name in class_names]
    k = len(names)
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    for label, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= k):
            raise ValueError(f"{label} holds an index outside the {k} class names")

    n = int(y_true.size)
    matrix = confusion_matrix(y_true, y_pred, k)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)

    per_class: dict[str, dict[str, float | int]] = {}
    f1_scores = np.zeros(k)
    for c, name in enumerate(names):
        precision = _ratio(true_positives[c], predicted[c])
        recall = _ratio(true_positives[c], support[c])
        f1 = _ratio(2 * precision * recall, precision + recall)
        f1_scores[c] = f1
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support[c]),
        }

    occurring = (support + predicted) > 0
    return {
        "n": n,
        "accuracy": _ratio(true_positives.sum(), n) if n else None,
        "macro_f1": float(f1_scores[occurring].mean()) if occurring.any() else None,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": names,
    }
