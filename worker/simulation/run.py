"""One simulator run end to end: data -> features -> curves.csv, plot, summary.

Shared by ``hemaloop simulate`` (a folder) and the admin comparison (a
project's labeled cells), so both produce the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .curves import LabelsToTarget, labels_to_reach, mean_curves, write_csv
from .dataset import LabeledSet, SimulationRefused, check_simulable, stratified_test_split
from .features import embeddings_file, head_features
from .loop import CurvePoint, HeadConfig, full_pool_accuracy, simulate
from .plot import svg_plot

# The target: this share of the accuracy of a model trained on the whole pool.
TARGET_SHARE = 0.95

Progress = Callable[[int, int, str], None]


@dataclass
class SimulationResult:
    points: list[CurvePoint]
    full_accuracy: float
    full_macro_f1: float
    target: float
    to_target: list[LabelsToTarget]
    n_pool: int
    n_test: int

    def summary(self) -> dict:
        return {
            "full_pool_accuracy": self.full_accuracy, "full_pool_macro_f1": self.full_macro_f1,
            "target_accuracy": self.target, "n_pool": self.n_pool, "n_test": self.n_test,
            "labels_to_target": {t.strategy: {"per_repeat": t.per_repeat, "mean": t.mean,
                                              "sd": t.sd} for t in self.to_target},
        }


def run_simulation(data: LabeledSet, strategies: Sequence[str], *, initial: int, batch: int,
                   rounds: int, repeats: int, out_dir: Path, cache_dir: Path, input_size: int,
                   weights: str, config: HeadConfig = HeadConfig(),
                   image_root: Path | None = None, stop_at_target: bool = False,
                   progress: Progress | None = None, features: str = "backbone",
                   embeddings: Path | None = None) -> SimulationResult:
    """Run, write ``curves.csv``, ``curves.svg`` and ``summary.json`` under ``out_dir``.

    ``features``: the feature sources the heads read (models/feature_sources.py),
    built as a round builds them (worker/head_inputs.py); ``embeddings``: a
    ``.npy`` of precomputed features instead, one row per cell in ``data``'s order.
    """
    from models.feature_sources import check
    from worker.ml.selection import get_strategy

    for name in strategies:
        get_strategy(name)  # an unknown name fails before minutes of feature extraction
    check_simulable(data, initial, batch)
    paths = [Path(image_root) / p if image_root else Path(p) for p in data.paths]
    total_images = len(paths)

    def feature_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total, f"features: {done}/{total}")

    if embeddings is not None:
        feats, ok = embeddings_file(embeddings, total_images)
    else:
        try:
            check(features)
        except ValueError as exc:
            raise SimulationRefused(str(exc)) from None
        feats, ok = head_features(paths, data.shas, sources=features, cache_dir=cache_dir,
                                  input_size=input_size, weights=weights,
                                  batch_size=config.batch_size, progress=feature_progress)
    if not ok.all():
        bad = [str(data.paths[i]) for i in np.flatnonzero(~ok)[:3]]
        raise SimulationRefused(f"{int((~ok).sum())} of {total_images} images could not be "
                                f"read, e.g. {', '.join(bad)}.")
    pool, test = stratified_test_split(data.labels)
    full_acc, full_f1 = full_pool_accuracy(feats, data.labels, pool, test, data.class_names,
                                           config)
    target = TARGET_SHARE * full_acc
    points = simulate(feats, data.labels, pool, test, data.class_names, strategies,
                      initial=initial, batch=batch, rounds=rounds, repeats=repeats,
                      config=config, stop_at=target if stop_at_target else None,
                      progress=progress)
    result = SimulationResult(points, full_acc, full_f1, target,
                              labels_to_reach(points, target), len(pool), len(test))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "curves.csv", points)
    (out_dir / "curves.svg").write_text(svg_plot(
        mean_curves(points), target=target,
        title=f"Accuracy vs labels (mean ± sd over {repeats} repeats)"), encoding="utf-8")
    (out_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n",
                                          encoding="utf-8")
    return result
