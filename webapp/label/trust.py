"""How far a model's suggestions can be trusted, from what the worker measured.

The worker stores, per model version, metrics on the test split (accuracy,
per-class precision and the confusion matrix) and, when there were enough
validation cells, the temperature fitted on them (``metrics["validation"]``).
A suggestion is shown *tentative* when the model's test accuracy is unknown
or below the project's ``suggestion_min_accuracy``, or when it was never
calibrated: its "88%" is then no probability a reader should lean on.  Bulk
verification of a class opens only once the model's precision for that class
was measured on test cells it predicted so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models import ModelVersion, Project


@dataclass(frozen=True)
class SuggestionTrust:
    accuracy: float | None  # on the test split; None: not measured
    n_test: int
    calibrated: bool
    tentative: bool
    # class name -> (precision, test cells the model predicted so)
    precision: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.accuracy is None:
            return "its accuracy on test cells is not measured yet"
        if not self.calibrated:
            return "its confidences are not calibrated yet (too few validation cells)"
        return f"its test accuracy ({self.accuracy:.0%}) is below this project's threshold"

    def class_precision(self, name: str) -> tuple[float, int] | None:
        """(precision, predicted test cells), or None when no test cell was predicted so."""
        return self.precision.get(name)


NO_MODEL = SuggestionTrust(None, 0, False, True)


def suggestion_trust(project: Project, version: ModelVersion | None) -> SuggestionTrust:
    if version is None:
        return NO_MODEL
    metrics = version.metrics or {}
    test = metrics.get("test") or {}
    accuracy = test.get("accuracy")
    calibrated = bool(metrics.get("validation"))
    precision: dict[str, tuple[float, int]] = {}
    names = test.get("class_names") or []
    matrix = test.get("confusion_matrix") or []
    for col, name in enumerate(names):
        predicted = sum(row[col] for row in matrix if col < len(row))
        stats = (test.get("per_class") or {}).get(name) or {}
        if predicted and "precision" in stats:
            precision[name] = (float(stats["precision"]), int(predicted))
    tentative = (accuracy is None or not calibrated
                 or accuracy < project.suggestion_min_accuracy)
    return SuggestionTrust(None if accuracy is None else float(accuracy),
                           int(test.get("n") or 0), calibrated, tentative, precision)
