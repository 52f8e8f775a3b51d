"""Helpers for the reading tests: projects of real demo cells, a stand-in active model."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

from sqlalchemy import select

from models import Image, ModelVersion, Prediction, Project, Split, TrainingRound
from models.db import session_scope
from tests.helpers import DEMO_DIR, LoggedIn, make_user, open_to_readers
from webapp.bootstrap import create_project
from webapp.ingest import import_path


def flat_project(settings, tmp_path: Path, name: str, n: int, **reading) -> int:
    """A pbc8 project of n unlabeled demo cells, all in the pool."""
    src = tmp_path / f"flat-{name}"
    src.mkdir()
    files = [f for d in sorted(DEMO_DIR.iterdir()) for f in sorted(d.iterdir())]
    for f in files[:n]:
        shutil.copy(f, src / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0)
        open_to_readers(s, project)
        for key, value in reading.items():
            setattr(project, key, value)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        assert report.imported == n
        return project.id


def contested_project(settings, tmp_path: Path, n: int, agreement_share: float = 0.0) -> int:
    """n pool cells needing k = 2 readers, 3 once a reader votes monocyte (a contested
    class) or the cell is in the agreement sample; readers r1 and r2, curator cara."""
    from tests.helpers import make_user

    pid = flat_project(settings, tmp_path, "p", n, readers_per_cell=2, contested_readers=3,
                       agreement_share=agreement_share)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.contested_class_ids = [project.class_by_name("monocyte").id]
    for name in ("r1", "r2"):
        make_user(settings, name, "pathologist")
    make_user(settings, "cara", "curator")
    return pid


def class_id(settings, project_id: int, name: str) -> int:
    with session_scope(settings.database_url) as s:
        return s.get(Project, project_id).class_by_name(name).id


def pool_ids(settings, project_id: int) -> list[int]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Image.id).where(
            Image.project_id == project_id, Image.split == Split.POOL).order_by(Image.id)))


def measured_metrics(class_names: list[str], accuracy: float = 0.9, n_per_class: int = 10,
                     calibrated: bool = True) -> dict:
    """Metrics in the worker's shape (worker/ml/evaluate.py): a confusion matrix on
    ``n_per_class`` test cells per class with the given accuracy, precision measured
    for every class, and a calibration record unless ``calibrated`` is False."""
    k = len(class_names)
    right = round(n_per_class * accuracy)
    matrix = [[right if i == j else 0 for j in range(k)] for i in range(k)]
    for i in range(k):  # the misses go to the next class
        matrix[i][(i + 1) % k] += n_per_class - right
    per_class = {}
    for c, name in enumerate(class_names):
        predicted = sum(row[c] for row in matrix)
        per_class[name] = {"precision": matrix[c][c] / predicted if predicted else 0.0,
                           "recall": matrix[c][c] / n_per_class, "f1": 0.0,
                           "support": n_per_class}
    n = k * n_per_class
    metrics = {"test": {"n": n, "accuracy": sum(matrix[i][i] for i in range(k)) / n,
                        "per_class": per_class, "confusion_matrix": matrix,
                        "class_names": list(class_names)}}
    if calibrated:
        metrics["validation"] = {"n": n, "temperature": 1.2}
    return metrics


def fake_active_model(settings, project_id: int, predicted: dict[int, tuple[str, float]],
                      metrics: dict | None = None) -> int:
    """An active model version whose predictions are given: image id -> (class, confidence).

    Stands in for a trained round (tests of the worker train real ones); the
    webapp only reads these rows.  ``metrics`` default to a measured, calibrated
    model (``measured_metrics``).
    """
    with session_scope(settings.database_url) as s:
        project = s.get(Project, project_id)
        for old in s.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                        ModelVersion.is_active)):
            old.is_active = False  # one active model per project
        s.flush()
        rnd = TrainingRound(project_id=project_id, status="succeeded", trigger="cli", progress=1.0)
        s.add(rnd)
        s.flush()
        version = ModelVersion(project_id=project_id, round_id=rnd.id, artifact_path="none.keras",
                               class_ids=[c.id for c in project.classes], input_size=75,
                               backbone_weights="none", is_active=True,
                               metrics=measured_metrics([c.name for c in project.classes])
                               if metrics is None else metrics)
        s.add(version)
        s.flush()
        for image_id, (name, confidence) in predicted.items():
            cid = project.class_by_name(name).id
            rest = (1 - confidence) / (len(project.classes) - 1)
            probs = {str(c.id): (confidence if c.id == cid else rest) for c in project.classes}
            entropy = -sum(p * math.log(p) for p in probs.values() if p > 0)
            s.add(Prediction(model_version_id=version.id, image_id=image_id, probabilities=probs,
                             predicted_class_id=cid, confidence=confidence, entropy=entropy,
                             margin=confidence - rest, least_confidence=1 - confidence))
        return version.id


def shown(html: str) -> int | None:
    match = re.search(r'id="cell"[^>]*data-image-id="(\d+)"', html, re.S)
    return int(match.group(1)) if match else None


def submission(html: str) -> str:
    return re.search(r'name="submission_id" value="(\w+)"', html).group(1)


def read_cells(app, project_id: int, name: str, choices) -> tuple[list[int], LoggedIn]:
    """``name`` reads cells in queue order through the labeling page, one choice each;
    returns the cells read and the reader's session (to undo in)."""
    reader = LoggedIn(app.test_client(), name)
    html = reader.get(f"/label/{project_id}").text
    ids = []
    for choice in choices:
        ids.append(shown(html))
        response = reader.post(f"/label/{project_id}/cells/{shown(html)}",
                               data={"choice": choice, "submission_id": submission(html)})
        assert response.status_code == 200, response.text
        html = response.text
    return ids, reader


def two_readers_disputing_a_curators_cells(app, settings, tmp_path: Path,
                                           sessions: dict[str, LoggedIn] | None = None):
    """Two readers (ann, bob) on k = 2 and a curator (cara): one agreed cell, one
    disputed, one flagged, one agreed-but-doubted by a confident active model.

    Returns (project id, those four cells, the model version id); the readers'
    sessions (to undo in) go into ``sessions`` when given.
    """
    pid = flat_project(settings, tmp_path, "p", 5, readers_per_cell=2)
    for name in ("ann", "bob"):
        make_user(settings, name, "pathologist")
    make_user(settings, "cara", "curator")
    sessions = {} if sessions is None else sessions
    a, sessions["ann"] = read_cells(app, pid, "ann",
                                    ["monocyte", "platelet", "ambiguous", "lymphocyte"])
    _, sessions["bob"] = read_cells(app, pid, "bob", ["monocyte", "basophil", "lymphocyte"])
    ids = pool_ids(settings, pid)
    predictions = {i: ("lymphocyte", 0.6) for i in ids}
    predictions[a[3]] = ("monocyte", 0.97)  # a confident model contradicts the final label
    version = fake_active_model(settings, pid, predictions)
    return pid, a, version
