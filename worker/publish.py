"""Publishing a model version: its row, its predictions, and the switch to it."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from models import ModelVersion, Prediction, RoundStatus, TrainingRound, utcnow
from models.db import session_scope
from models.settings import Settings

from .activation import activate

# Feature caches of this many recent versions (plus the active one) are kept.
KEEP_FEATURE_SETS = 3
INSERT_CHUNK = 2000


def prediction_rows(model_version_id: int, image_ids: list[int], probs: np.ndarray,
                    class_ids: list[int]) -> list[dict[str, Any]]:
    from worker.ml.uncertainty import uncertainty_scores

    if not len(image_ids):
        return []
    scores = uncertainty_scores(probs)
    top = probs.argmax(1)
    now = utcnow()
    keys = [str(c) for c in class_ids]
    return [
        {
            "model_version_id": model_version_id, "image_id": int(image_id),
            "probabilities": {k: round(float(p), 6) for k, p in zip(keys, probs[i])},
            "predicted_class_id": class_ids[int(top[i])],
            "confidence": float(scores["confidence"][i]), "entropy": float(scores["entropy"][i]),
            "margin": float(scores["margin"][i]),
            "least_confidence": float(scores["least_confidence"][i]), "created_at": now,
        }
        for i, image_id in enumerate(image_ids)
    ]


def store_predictions(session: Session, version: ModelVersion, image_ids: list[int],
                      probs: np.ndarray, replace: bool = False) -> int:
    """Insert (or with ``replace``, first remove) this version's predictions for these cells."""
    if replace and image_ids:
        for start in range(0, len(image_ids), INSERT_CHUNK):
            session.execute(delete(Prediction).where(
                Prediction.model_version_id == version.id,
                Prediction.image_id.in_(image_ids[start:start + INSERT_CHUNK])))
    rows = prediction_rows(version.id, image_ids, probs, version.class_ids)
    for start in range(0, len(rows), INSERT_CHUNK):
        session.execute(Prediction.__table__.insert(), rows[start:start + INSERT_CHUNK])
    return len(rows)


def publish(settings: Settings, round_id: int, project_id: int, *, token: str | None = None,
            version_values: dict, pool_ids: list[int], probs: np.ndarray,
            round_values: dict) -> int:
    """Store the version, its predictions and the round's result in one transaction,
    so the labeling queue switches from the old ranking to the new one at once.

    Only the attempt holding ``token`` publishes: the round row is claimed
    first (a conditional UPDATE on id, token and 'running', which on PostgreSQL
    also locks the row until commit), then the version is added.  A cancelled
    round raises Cancelled; a round taken over by another attempt raises
    AttemptSuperseded; either way nothing is written.
    """
    from .round_state import AttemptSuperseded, Cancelled, owned_by

    with session_scope(settings.database_url) as s:
        done = s.execute(
            update(TrainingRound)
            .where(owned_by(round_id, token), TrainingRound.status == RoundStatus.RUNNING)
            .values(status=RoundStatus.SUCCEEDED, progress=1.0, phase="done", eta_seconds=None,
                    finished_at=utcnow(), heartbeat_at=utcnow(), **round_values)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            row = s.execute(select(TrainingRound.status, TrainingRound.attempt_token)
                            .where(TrainingRound.id == round_id)).one_or_none()
            if row is not None and row[1] == token and row[0] == RoundStatus.CANCELLED:
                raise Cancelled()
            raise AttemptSuperseded(round_id)
        version = ModelVersion(project_id=project_id, round_id=round_id, is_active=False,
                               **version_values)
        s.add(version)
        s.flush()
        n = store_predictions(s, version, pool_ids, probs)
        activate(s, version)
        s.execute(update(TrainingRound).where(TrainingRound.id == round_id)
                  .values(n_scored=n).execution_options(synchronize_session=False))
        version_id = version.id
    prune_features(settings, project_id)
    return version_id


def prune_features(settings: Settings, project_id: int) -> list[str]:
    """Drop cached features no recent or active version of any project needs."""
    from worker.ml.feature_store import prune

    with session_scope(settings.database_url) as s:
        keep = set(s.scalars(select(ModelVersion.feature_key).where(ModelVersion.is_active)))
        for pid in s.scalars(select(ModelVersion.project_id).distinct()):
            keep.update(s.scalars(select(ModelVersion.feature_key)
                                  .where(ModelVersion.project_id == pid)
                                  .order_by(ModelVersion.id.desc()).limit(KEEP_FEATURE_SETS)))
        # A round still running may be writing its fine-tuned features now
        # (under its attempt's key, worker/training.py attempt_feature_key).
        busy = set(s.scalars(select(TrainingRound.id).where(
            TrainingRound.status.in_([RoundStatus.QUEUED, RoundStatus.RUNNING]))))
    keep.update(k.name for k in (settings.storage_dir / "features").glob("round*")
                if k.name.removeprefix("round").split("-")[0] in {str(i) for i in busy})
    # Pristine-backbone keys are cheap to keep and shared by every project.
    keep.update(k.name for k in (settings.storage_dir / "features").glob("*")
                if not k.name.startswith("round"))
    return prune(settings.storage_dir / "features", keep)
