"""Starting training rounds: one path for the admin button, the CLI and the scheduler."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Project, RoundStatus, Split, TrainingRound, User
from models.base import utcnow
from models.labels import label_counts, labeled_images

from .celery_app import RUN_ROUND

log = logging.getLogger(__name__)


class RoundError(Exception):
    """A failure whose message is meant for the admin (not an internal error)."""


class RoundRefused(RoundError):
    """The round cannot start with the labels the project has."""


class RoundBusy(RoundRefused):
    """The project already has a round queued or running."""


def check_trainable(counts: dict[int, int], class_names: dict[int, str], min_per_class: int) -> None:
    """Refuse a round that could not learn anything useful."""
    usable = {c: n for c, n in counts.items() if n >= min_per_class}
    if len(usable) < 2:
        have = ", ".join(f"{class_names[c]}: {n}" for c, n in sorted(counts.items())) or "none"
        raise RoundRefused(
            f"Training needs at least {min_per_class} label(s) in each of at least two classes; "
            f"labels so far: {have}."
        )


def active_round(session: Session, project_id: int) -> TrainingRound | None:
    return session.scalar(
        select(TrainingRound).where(
            TrainingRound.project_id == project_id,
            TrainingRound.status.in_([RoundStatus.QUEUED, RoundStatus.RUNNING]),
        )
    )


def _busy(rnd: TrainingRound) -> RoundBusy:
    return RoundBusy(f"Round {rnd.id} is already {rnd.status.value} for this project; "
                     "wait for it to finish or cancel it.")


def create_round(session: Session, project: Project, *, trigger: str,
                 user: User | None = None) -> TrainingRound:
    """Check the project can train, then add a queued round (committed).

    The database's partial unique index settles races: of two rounds created
    at once for a project, one commits and the other is refused as busy.
    """
    busy = active_round(session, project.id)
    if busy is not None:
        raise _busy(busy)
    counts = label_counts(labeled_images(session, project, Split.POOL))
    check_trainable(counts, {c.id: c.name for c in project.classes}, project.min_labels_per_class)
    rnd = TrainingRound(project_id=project.id, trigger=trigger,
                        triggered_by_id=user.id if user else None,
                        warnings=[], config={}, timings={},
                        labels_at_start=sum(counts.values()))
    session.add(rnd)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        busy = active_round(session, project.id)
        if busy is None:
            raise
        raise _busy(busy) from None
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


def cancel_round(session: Session, rnd: TrainingRound) -> bool:
    """Ask a queued or running round to stop; the worker checks between steps.

    A conditional UPDATE, not a read-then-write: a round that finished after
    the admin's page loaded it stays finished (on PostgreSQL the UPDATE waits
    for the publishing transaction, then finds the row no longer running).
    """
    not_started = TrainingRound.started_at.is_(None)
    result = session.execute(
        update(TrainingRound)
        .where(TrainingRound.id == rnd.id,
               TrainingRound.status.in_((RoundStatus.QUEUED, RoundStatus.RUNNING)))
        .values(status=RoundStatus.CANCELLED,
                phase=case((not_started, "cancelled"), else_="cancelling"),
                finished_at=case((not_started, utcnow()), else_=None),
                eta_seconds=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(rnd)
    return result.rowcount == 1
