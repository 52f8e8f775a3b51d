"""Activating a model version: one path for the admin page and the API."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.orm import Session

from models import ModelVersion
from worker.celery_app import SCORE_VERSION
from worker.activation import activate

from ..queueing import celery


def activate_and_rescore(session: Session, version: ModelVersion) -> bool:
    """Activate ``version`` (committed) and queue the pool's re-scoring with it.

    Returns False when the scoring could not be queued: the activation stands,
    and the caller says that cells imported since its round have no suggestion
    yet.  An already active version is left as it is (True).
    """
    if version.is_active:
        return True
    activate(session, version)
    session.commit()
    try:
        celery().send_task(SCORE_VERSION, args=[version.id])
    except Exception:  # noqa: BLE001 - activation stands; scoring can be redone
        current_app.logger.exception("could not enqueue scoring of version %s", version.id)
        return False
    return True
