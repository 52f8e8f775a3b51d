"""Starting describe runs (cell measurements): one path for the import job, the admin
button and the CLI.

No worker.ml here: the webapp imports this to queue a run and must not load
scikit-image or TensorFlow.  The measuring itself is worker/describe.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import DescribeRun, DescribeStatus
from models.base import utcnow

from .celery_app import DESCRIBE_CELLS

log = logging.getLogger(__name__)

QUEUE_FAILED = "It could not be queued (is the broker running?); start it again."
LOST = "Its worker stopped reporting; a new run measures what it left."


class DescribeBusy(Exception):
    """The project has a describe run queued or running; the message says which."""


def live_run(session: Session, project_id: int, stale_seconds: float) -> DescribeRun | None:
    """The project's queued or running run, after failing a running one whose worker
    went silent for ``stale_seconds`` (so a lost worker blocks nothing for long)."""
    runs = session.scalars(select(DescribeRun).where(
        DescribeRun.project_id == project_id,
        DescribeRun.status.in_([DescribeStatus.QUEUED, DescribeStatus.RUNNING]))
        .order_by(DescribeRun.id)).all()
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    live = None
    for run in runs:
        seen = run.heartbeat_at or run.started_at
        if run.status == DescribeStatus.RUNNING and seen is not None and seen < cutoff:
            run.status, run.error, run.finished_at = DescribeStatus.FAILED, LOST, utcnow()
        else:
            live = run
    session.commit()
    return live


def create_run(session: Session, project_id: int, *, trigger: str, stale_seconds: float,
               user_id: int | None = None, allow_behind_running: bool = False) -> DescribeRun:
    """A queued run (committed), or DescribeBusy.

    ``allow_behind_running``: an import adds cells while a run may be measuring
    the older ones, so it queues one more behind a running run (a queued one
    will pick the new cells up when it starts, so none is added then).
    """
    live = live_run(session, project_id, stale_seconds)
    if live is not None and not (allow_behind_running and live.status == DescribeStatus.RUNNING):
        raise DescribeBusy(f"Measuring run {live.id} is already {live.status.value} for this "
                           "project; it measures every cell that lacks measurements.")
    run = DescribeRun(project_id=project_id, trigger=trigger, created_by_id=user_id)
    session.add(run)
    session.commit()
    return run


def enqueue_run(session: Session, celery: Celery, run: DescribeRun) -> bool:
    """Send the run to the default queue; a broker that is down fails the row, says False."""
    try:
        celery.send_task(DESCRIBE_CELLS, args=[run.id])
    except Exception:  # noqa: BLE001 -- the broker is down: say so on the row
        log.exception("could not enqueue describe run %s", run.id)
        run.status, run.error, run.finished_at = DescribeStatus.FAILED, QUEUE_FAILED, utcnow()
        session.commit()
        return False
    return True


def latest_run(session: Session, project_id: int) -> DescribeRun | None:
    return session.scalar(select(DescribeRun).where(DescribeRun.project_id == project_id)
                          .order_by(DescribeRun.id.desc()).limit(1))
