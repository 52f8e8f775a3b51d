"""A training round's life on its database row: claim, progress, finish, recovery.

The Celery task is a thin shell around :func:`run_round`.  Every step opens
its own short session (never one for the worker's life), and a round always
ends ``succeeded``, ``failed`` (with a message an admin can act on) or
``cancelled``.  The training itself is in worker/training.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

from celery import Celery
from sqlalchemy import select, update

from models import RoundStatus, TrainingRound, utcnow
from models.db import session_scope
from models.settings import Settings

from .launch import RoundError
from .round_state import (  # noqa: F401 - the round's bookkeeping, re-exported for callers
    AttemptSuperseded, Cancelled, Heartbeat, Progress, claim, finish, heartbeat_interval, record,
    round_status,
)

log = logging.getLogger(__name__)

# A round whose worker vanished is queued again this many times, then failed.
MAX_ATTEMPTS = 2


def run_round(settings: Settings, round_id: int, worker: str = "local") -> RoundStatus | None:
    """Run a queued round; returns its final status. Never raises for round failures.

    An attempt that loses the row to another (its worker was presumed lost and
    the round handed on) stops without writing anything more and returns the
    status the row has now.
    """
    from .training import train_round

    token = claim(settings, round_id, worker)
    if token is None:
        log.info("round %s is not queued any more; nothing to do", round_id)
        return round_status(settings, round_id)
    progress = Progress(settings, round_id, token)

    def end(**values) -> None:
        if not finish(settings, round_id, token, **values):
            log.warning("round %s: attempt %s no longer owns the row; its end is not written",
                        round_id, token)

    try:
        with Heartbeat(progress, heartbeat_interval(settings)):
            train_round(settings, round_id, progress)
    except AttemptSuperseded:
        log.warning("round %s: attempt %s was superseded (its worker was presumed lost); "
                    "stopped without publishing", round_id, token)
        return round_status(settings, round_id)
    except RoundError as exc:
        log.warning("round %s failed: %s", round_id, exc)
        end(status=RoundStatus.FAILED, error=str(exc), phase="failed")
        return round_status(settings, round_id)
    except Cancelled:
        end(status=RoundStatus.CANCELLED, phase="cancelled")
        return round_status(settings, round_id)
    except Exception as exc:  # noqa: BLE001 - every failure must end on the row
        log.exception("round %s crashed", round_id)
        end(status=RoundStatus.FAILED, phase="failed",
            error=f"Unexpected error in the worker ({type(exc).__name__}); "
                  f"the worker log has the details for round {round_id}.")
        return round_status(settings, round_id)
    return RoundStatus.SUCCEEDED


def fail_lost_rounds(settings: Settings, now_fn: Callable = utcnow,
                     celery: Celery | None = None) -> int:
    """Deal with rounds whose worker is gone; returns how many.

    A round is lost only when its heartbeat is older than the stale limit: a
    running attempt beats from a thread every few seconds (worker/round_state.py),
    so a stale heartbeat means its worker is gone, never merely busy.  A
    worker starting under some name says nothing about another's round.

    With a Celery app to send it again, a lost round is queued once more (up
    to MAX_ATTEMPTS deliveries); otherwise, or after that, it is failed with
    the reason.  Either way its attempt token is cleared, so the lost attempt,
    should it wake up after all, can write nothing more.  Every change is a
    conditional UPDATE on the token and heartbeat read here, so an attempt
    that beats meanwhile keeps its round.  Runs from Celery beat and at
    worker start-up.
    """
    from .launch import enqueue_round

    now = now_fn()
    stale_before = now - timedelta(seconds=settings.round_stale_seconds)
    lost_or_silent = TrainingRound.heartbeat_at.is_(None) | (TrainingRound.heartbeat_at < stale_before)
    requeue: list[int] = []
    lost = 0
    with session_scope(settings.database_url) as s:
        running = s.execute(
            select(TrainingRound.id, TrainingRound.worker, TrainingRound.attempts,
                   TrainingRound.attempt_token, TrainingRound.warnings)
            .where(TrainingRound.status == RoundStatus.RUNNING, lost_or_silent)
        ).all()
    for round_id, worker, attempts, token, warnings in running:
        why = (f"No progress from worker {worker or '?'} for over "
               f"{settings.round_stale_seconds} s; the worker is presumed lost.")
        if celery is not None and attempts < MAX_ATTEMPTS:
            values = dict(status=RoundStatus.QUEUED, phase="queued again after a lost worker",
                          progress=0.0, eta_seconds=None,
                          warnings=list(warnings or []) + [why + " Queued again."])
        else:
            values = dict(status=RoundStatus.FAILED, finished_at=now, phase="failed",
                          error=why, eta_seconds=None)
        with session_scope(settings.database_url) as s:
            taken = s.execute(
                update(TrainingRound)
                .where(TrainingRound.id == round_id, TrainingRound.status == RoundStatus.RUNNING,
                       TrainingRound.attempt_token.is_(None) if token is None
                       else TrainingRound.attempt_token == token,
                       lost_or_silent)
                .values(attempt_token=None, **values)
                .execution_options(synchronize_session=False)
            ).rowcount
        if not taken:
            continue  # it beat (or ended) since we looked: not lost
        lost += 1
        if values["status"] == RoundStatus.QUEUED:
            requeue.append(round_id)
    # A round cancelled while running whose worker died before it stopped:
    # it is cancelled already; only its end was never written.
    with session_scope(settings.database_url) as s:
        s.execute(
            update(TrainingRound)
            .where(TrainingRound.status == RoundStatus.CANCELLED,
                   TrainingRound.finished_at.is_(None), lost_or_silent)
            .values(finished_at=now, phase="cancelled", attempt_token=None)
            .execution_options(synchronize_session=False)
        )
    for round_id in requeue:
        with session_scope(settings.database_url) as s:
            enqueue_round(s, celery, s.get(TrainingRound, round_id))
    return lost
