"""Scoring the unlabeled pool with a stored model version (the `score` queue).

Used when an admin activates or rolls back to a version: cells imported or
un-decided since that version's round get predictions too.  The head's input
comes from worker/head_inputs.py (the version's feature sources, each part
from its cache, computed where missing).

The pool is split into chunks of ``score_chunk_cells`` cells (ranges of image
ids, so a message stays a few numbers however large the pool); the Celery
task runs them as a chord (worker/tasks.py), so more workers on the `score`
queue finish sooner, and the callback builds the next review queue once the
last chunk is in.  :func:`score_version` runs the same steps in one process.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import select

from models import Image, ModelVersion, Prediction, Project
from models.db import session_scope
from models.labels import undecided
from models.settings import Settings

from .publish import store_predictions

log = logging.getLogger(__name__)


def _pool_query(project: Project, version_id: int, only_missing: bool):
    """The project's pool cells without a final label (what a round scores too)."""
    query = select(Image.id).where(Image.project_id == project.id, *undecided(project))
    if only_missing:
        query = query.where(~select(Prediction.id).where(
            Prediction.model_version_id == version_id,
            Prediction.image_id == Image.id).exists())
    return query


def plan_chunks(settings: Settings, version_id: int,
                only_missing: bool = True) -> list[tuple[int, int]]:
    """Inclusive image-id ranges, each holding at most ``score_chunk_cells`` pool cells
    to score.  Streams ids (integers only) instead of loading the pool's rows."""
    size = settings.score_chunk_cells
    chunks: list[tuple[int, int]] = []
    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            log.warning("model version %s does not exist; nothing to score", version_id)
            return []
        project = s.get(Project, version.project_id)
        ids = s.scalars(_pool_query(project, version.id, only_missing)
                        .order_by(Image.id).execution_options(yield_per=size))
        first = last = None
        count = 0
        for image_id in ids:
            if first is None:
                first = image_id
            last, count = image_id, count + 1
            if count == size:
                chunks.append((first, last))
                first, count = None, 0
        if first is not None:
            chunks.append((first, last))
    return chunks


def score_chunk(settings: Settings, version_id: int, lo: int, hi: int,
                only_missing: bool = True) -> int:
    """Predict the pool cells with ids in [lo, hi]; returns rows written."""
    from worker.ml import calibration
    from worker.ml.backend import CellClassifier

    from .head_inputs import VersionView, version_features

    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            return 0
        project = s.get(Project, version.project_id)
        rows = s.execute(
            select(Image.id, Image.sha256, Image.storage_path)
            .where(Image.id.in_(_pool_query(project, version.id, only_missing)
                                .where(Image.id >= lo, Image.id <= hi)))
            .order_by(Image.id)).all()
        artifact, version_view = version.artifact_path, VersionView.of(version)
    if not rows:
        return 0
    # The version's head input through its caches (worker/head_inputs.py): the
    # model is loaded for its head and standardisation, and computes what is missing.
    clf = CellClassifier.load(settings.storage_dir / artifact)
    feats, ok = version_features(
        settings, version_view, clf, [r.sha256 for r in rows],
        lambda missing: [settings.storage_dir / rows[i].storage_path for i in missing])
    ids = [r.id for r in rows]
    good = np.flatnonzero(ok)
    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        probs = calibration.softmax(clf.logits_features(feats[good]), version.temperature)
        return store_predictions(s, version, [ids[r] for r in good], probs,
                                 replace=not only_missing)


def finish_scoring(settings: Settings, version_id: int, counts: list[int]) -> int:
    """After the last chunk: the next review queue under this version."""
    from .review_queue import build_review_queue

    total = int(sum(counts or []))
    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        project_id = version.project_id if version is not None and version.is_active else None
    if project_id is not None:
        try:
            build_review_queue(settings, project_id, trigger="scoring")
        except Exception:  # noqa: BLE001 - recorded on the queue row; the scores stand
            log.warning("review queue of project %s not rebuilt", project_id, exc_info=True)
    return total


def score_version(settings: Settings, version_id: int, only_missing: bool = True) -> int:
    """All chunks in this process, then the finish step; returns rows written."""
    counts = [score_chunk(settings, version_id, lo, hi, only_missing)
              for lo, hi in plan_chunks(settings, version_id, only_missing)]
    return finish_scoring(settings, version_id, counts)
