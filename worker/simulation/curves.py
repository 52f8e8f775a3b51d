"""Learning curves: CSV out, mean ± sd per labels count, labels needed to reach a target."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .loop import CurvePoint

CSV_FIELDS = ("strategy", "repeat", "labels", "accuracy", "macro_f1")


def write_csv(path: Path, points: Iterable[CurvePoint]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for p in points:
            w.writerow([p.strategy, p.repeat, p.labels, f"{p.accuracy:.4f}", f"{p.macro_f1:.4f}"])


@dataclass(frozen=True)
class MeanCurve:
    strategy: str
    labels: list[int]
    mean: list[float]
    sd: list[float]


def mean_curves(points: Sequence[CurvePoint], metric: str = "accuracy") -> list[MeanCurve]:
    """Per strategy (in first-seen order) and labels count: mean and sd over repeats."""
    out = []
    for name in dict.fromkeys(p.strategy for p in points):
        by_labels: dict[int, list[float]] = {}
        for p in points:
            if p.strategy == name:
                by_labels.setdefault(p.labels, []).append(getattr(p, metric))
        xs = sorted(by_labels)
        out.append(MeanCurve(name, xs, [float(np.mean(by_labels[x])) for x in xs],
                             [float(np.std(by_labels[x])) for x in xs]))
    return out


@dataclass(frozen=True)
class LabelsToTarget:
    strategy: str
    per_repeat: list[int | None]  # None: the repeat never reached the target

    @property
    def reached(self) -> list[int]:
        return [n for n in self.per_repeat if n is not None]

    @property
    def mean(self) -> float | None:
        """Mean over repeats, or None unless every repeat reached the target."""
        if not self.per_repeat or len(self.reached) < len(self.per_repeat):
            return None
        return float(np.mean(self.reached))

    @property
    def sd(self) -> float | None:
        return float(np.std(self.reached)) if self.mean is not None else None


def labels_to_reach(points: Sequence[CurvePoint], target: float,
                    metric: str = "accuracy") -> list[LabelsToTarget]:
    """The first labels count at which each repeat's curve reaches ``target``."""
    out = []
    for name in dict.fromkeys(p.strategy for p in points):
        reps = sorted({p.repeat for p in points if p.strategy == name})
        per = []
        for r in reps:
            curve = sorted((p.labels, getattr(p, metric)) for p in points
                           if p.strategy == name and p.repeat == r)
            per.append(next((n for n, v in curve if v >= target), None))
        out.append(LabelsToTarget(name, per))
    return out
