"""Rows as a finished training round leaves them, for tests of the pages that show them.

The webapp only reads these rows; tests of the worker train real rounds.
"""

from __future__ import annotations

from sqlalchemy import update

from models import ModelVersion, Project, RoundStatus, TrainingRound, utcnow
from models.db import session_scope


def finish_round(settings, round_id: int, accuracy: float = 0.75) -> int:
    """Mark a round succeeded with an active model version and test metrics; returns its id."""
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        project = s.get(Project, rnd.project_id)
        names = [c.name for c in project.classes][:2]
        s.execute(update(ModelVersion).where(ModelVersion.project_id == project.id)
                  .values(is_active=False))
        rnd.status, rnd.progress, rnd.phase = RoundStatus.SUCCEEDED, 1.0, "done"
        rnd.finished_at, rnd.n_train, rnd.n_scored = utcnow(), 8, 4
        rnd.timings = {"head_s": 3.0, "total_s": 9.5}
        version = ModelVersion(
            project_id=project.id, round_id=rnd.id, artifact_path="none.keras",
            class_ids=[c.id for c in project.classes], input_size=75, backbone_weights="none",
            is_active=True, n_train=8, metrics={
                "train_accuracy": 0.9,
                "test": {"n": 4, "accuracy": accuracy, "macro_f1": 0.66, "ece": 0.1,
                         "class_names": names, "confusion_matrix": [[2, 0], [1, 1]],
                         "per_class": {n: {"precision": 0.7, "recall": 0.7, "f1": 0.7,
                                           "support": 2} for n in names}}})
        s.add(version)
        s.flush()
        return version.id
