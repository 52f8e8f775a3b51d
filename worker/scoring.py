"""Scoring the unlabeled pool with a stored model version (the `score` queue).

Used when an admin activates or rolls back to a version: cells imported or
un-decided since that version's round get predictions too.  Features come
from the cache when that backbone's are there; the model is loaded only if
some are missing.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import select

from models import Image, ModelVersion, Prediction, Project
from models.db import session_scope
from models.labels import unlabeled_pool
from models.settings import Settings

from .publish import store_predictions

log = logging.getLogger(__name__)


def score_version(settings: Settings, version_id: int, only_missing: bool = True) -> int:
    """Predict the project's undecided pool cells with ``version_id``; returns rows written."""
    from worker.ml import calibration
    from worker.ml.backend import CellClassifier
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM

    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            log.warning("model version %s does not exist; nothing to score", version_id)
            return 0
        project = s.get(Project, version.project_id)
        pool = unlabeled_pool(s, project)
        if only_missing:
            have = set(s.scalars(select(Prediction.image_id)
                                 .where(Prediction.model_version_id == version.id)))
            pool = [(i, p) for i, p in pool if i not in have]
        # By project, not by a list of ids: a pool can outgrow SQL's parameter limits.
        shas = {i: sha for i, sha in s.execute(
            select(Image.id, Image.sha256).where(Image.project_id == project.id))}
    if not pool:
        return 0
    clf = CellClassifier.load(settings.storage_dir / version.artifact_path)
    store = FeatureStore(settings.storage_dir / "features", version.feature_key)
    ids = [i for i, _ in pool]
    feats, found = store.get_many([shas[i] for i in ids], FEATURE_DIM)
    missing = np.flatnonzero(~found)
    ok = found.copy()
    if len(missing):
        computed, computed_ok = clf.features(
            [settings.storage_dir / pool[i][1] for i in missing], settings.batch_size)
        feats[missing] = computed
        ok[missing] = computed_ok
        store.put_many([shas[i] for i in ids], feats, missing[computed_ok])
    rows = np.flatnonzero(ok)
    probs = calibration.softmax(clf.logits_features(feats[rows]), version.temperature)
    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        return store_predictions(s, version, [ids[r] for r in rows], probs,
                                 replace=not only_missing)
