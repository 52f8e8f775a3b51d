"""Starting training rounds: the one path for the admin button and the CLI."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Project, RoundStatus, Split, TrainingRound, User
from models.labels import label_counts, labeled_images
from worker.celery_app import RUN_ROUND
from worker.rounds import RoundRefused, check_trainable

log = logging.getLogger(__name__)


class RoundBusy(RoundRefused):
    """The project already has a round queued or running."""


def active_round(session: Session, project_id: int) -> TrainingRound | None:
    return session.scalar(
        select(TrainingRound).where(
            TrainingRound.project_id == project_id,
            TrainingRound.status.in_([RoundStatus.QUEUED, RoundStatus.RUNNING]),
        )
    )


def create_round(session: Session, project: Project, *, trigger: str,
                 user: User | None = None) -> TrainingRound:
    """Check the project can train, then add a queued round (committed)."""
    busy = active_round(session, project.id)
    if busy is not None:
        raise RoundBusy(f"Round {busy.id} is already {busy.status.value} for this project; "
                        "wait for it to finish.")
    counts = label_counts(labeled_images(session, project, Split.POOL))
    check_trainable(counts, {c.id: c.name for c in project.classes}, project.min_labels_per_class)
    rnd = TrainingRound(project_id=project.id, trigger=trigger,
                        triggered_by_id=user.id if user else None,
                        warnings=[], config={}, timings={})
    session.add(rnd)
    session.commit()
    return rnd


def enqueue_round(session: Session, celery: Celery, rnd: TrainingRound) -> None:
    """Send the round to the train queue; a broker failure fails the round, visibly."""
    try:
        result = celery.send_task(RUN_ROUND, args=[rnd.id])
    except Exception:  # noqa: BLE001 - any broker failure ends the same way
        log.exception("could not enqueue round %s", rnd.id)
        rnd.status = RoundStatus.FAILED
        rnd.phase = "failed"
        rnd.error = "The task queue could not be reached; is the broker running?"
        session.commit()
        return
    rnd.celery_task_id = result.id
    session.commit()
