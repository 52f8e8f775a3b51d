"""A training round's life on its database row: claim, progress, finish, recovery.

The Celery task is a thin shell around :func:`run_round`.  Every step opens
its own short session (never one for the worker's life), and a round always
ends ``succeeded``, ``failed`` (with a message an admin can act on) or
``cancelled``.  The training itself is in worker/training.py.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Callable

from celery import Celery
from sqlalchemy import select, update

from models import RoundStatus, TrainingRound, utcnow
from models.db import session_scope
from models.settings import Settings

from .launch import RoundError

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
# A round whose worker vanished is queued again this many times, then failed.
MAX_ATTEMPTS = 2


class Cancelled(Exception):
    """The admin cancelled the round; raised between steps."""


class Progress:
    """Writes phase, progress, ETA and heartbeat to the round row, at most once a second.

    Phases are given as (start, end) fractions of the whole round, so the bar
    moves steadily however the time splits between feature extraction,
    training and scoring.
    """

    def __init__(self, settings: Settings, round_id: int):
        self.settings, self.round_id = settings, round_id
        self._last = 0.0
        self._started = time.monotonic()
        self.span = (0.0, 1.0)

    def phase(self, start: float, end: float, message: str) -> None:
        self.span = (start, end)
        self(0.0, message, force=True)

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < HEARTBEAT_EVERY_S:
            return
        self._last = now
        lo, hi = self.span
        overall = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        elapsed = now - self._started
        eta = elapsed * (1 - overall) / overall if overall > 0.05 else None
        with session_scope(self.settings.database_url) as s:
            s.execute(
                update(TrainingRound)
                .where(TrainingRound.id == self.round_id)
                .values(progress=overall, phase=message[:200], heartbeat_at=utcnow(),
                        eta_seconds=eta)
            )

    def cancelled(self) -> bool:
        with session_scope(self.settings.database_url) as s:
            status = s.scalar(select(TrainingRound.status).where(TrainingRound.id == self.round_id))
        return status == RoundStatus.CANCELLED

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled()


def _claim(settings: Settings, round_id: int, worker: str) -> bool:
    """queued -> running, atomically; False when another delivery already took it."""
    with session_scope(settings.database_url) as s:
        now = utcnow()
        claimed = s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id, TrainingRound.status == RoundStatus.QUEUED)
            .values(status=RoundStatus.RUNNING, started_at=now, heartbeat_at=now,
                    worker=worker[:200], phase="starting", progress=0.0,
                    attempts=TrainingRound.attempts + 1)
        ).rowcount
    return bool(claimed)


def finish(settings: Settings, round_id: int, **values: Any) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(finished_at=utcnow(), heartbeat_at=utcnow(), eta_seconds=None, **values)
        )


def record(settings: Settings, round_id: int, **values: Any) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == round_id).values(**values))


def _status(settings: Settings, round_id: int) -> RoundStatus | None:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id))


def run_round(settings: Settings, round_id: int, worker: str = "local") -> RoundStatus | None:
    """Run a queued round; returns its final status. Never raises for round failures."""
    from .training import train_round

    if not _claim(settings, round_id, worker):
        log.info("round %s is not queued any more; nothing to do", round_id)
        return _status(settings, round_id)
    progress = Progress(settings, round_id)
    try:
        train_round(settings, round_id, progress)
    except RoundError as exc:
        log.warning("round %s failed: %s", round_id, exc)
        finish(settings, round_id, status=RoundStatus.FAILED, error=str(exc), phase="failed")
        return RoundStatus.FAILED
    except Cancelled:
        finish(settings, round_id, status=RoundStatus.CANCELLED, phase="cancelled")
        return RoundStatus.CANCELLED
    except Exception as exc:  # noqa: BLE001 - every failure must end on the row
        log.exception("round %s crashed", round_id)
        finish(
            settings, round_id, status=RoundStatus.FAILED, phase="failed",
            error=f"Unexpected error in the worker ({type(exc).__name__}); "
                  f"the worker log has the details for round {round_id}.",
        )
        return RoundStatus.FAILED
    return RoundStatus.SUCCEEDED


def fail_lost_rounds(settings: Settings, worker: str | None = None,
                     now_fn: Callable = utcnow, celery: Celery | None = None) -> int:
    """Deal with rounds whose worker is gone; returns how many.

    A round is lost when its worker restarted (same name, still 'running') or
    its heartbeat is older than the stale limit.  With a Celery app to send
    it again, a lost round is queued once more (up to MAX_ATTEMPTS deliveries);
    otherwise, or after that, it is failed with the reason.  Runs at worker
    start-up and whenever the admin page lists rounds, so no round stays
    'running' forever.
    """
    from .launch import enqueue_round

    stale_before = now_fn() - timedelta(seconds=settings.round_stale_seconds)
    requeue: list[int] = []
    with session_scope(settings.database_url) as s:
        running = s.scalars(
            select(TrainingRound).where(TrainingRound.status == RoundStatus.RUNNING)
        ).all()
        lost = 0
        for rnd in running:
            restarted = worker is not None and rnd.worker == worker
            stale = rnd.heartbeat_at is None or rnd.heartbeat_at < stale_before
            if not (restarted or stale):
                continue
            lost += 1
            why = ("The worker running this round stopped (restarted or killed) before it "
                   "finished." if restarted else
                   f"No progress from worker {rnd.worker or '?'} for over "
                   f"{settings.round_stale_seconds} s; the worker is presumed lost.")
            if celery is not None and rnd.attempts < MAX_ATTEMPTS:
                rnd.status = RoundStatus.QUEUED
                rnd.phase = "queued again after a lost worker"
                rnd.progress = 0.0
                rnd.warnings = list(rnd.warnings or []) + [why + " Queued again."]
                requeue.append(rnd.id)
            else:
                rnd.status = RoundStatus.FAILED
                rnd.finished_at = now_fn()
                rnd.phase = "failed"
                rnd.error = why
        # A round cancelled while running whose worker died before it stopped:
        # it is cancelled already; only its end was never written.
        stopping = s.scalars(
            select(TrainingRound).where(TrainingRound.status == RoundStatus.CANCELLED,
                                        TrainingRound.finished_at.is_(None))
        ).all()
        for rnd in stopping:
            if (worker is not None and rnd.worker == worker) or rnd.heartbeat_at is None \
                    or rnd.heartbeat_at < stale_before:
                rnd.finished_at = now_fn()
                rnd.phase = "cancelled"
    for round_id in requeue:
        with session_scope(settings.database_url) as s:
            enqueue_round(s, celery, s.get(TrainingRound, round_id))
    return lost
