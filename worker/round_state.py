"""The round row's bookkeeping for one attempt: claim, progress, heartbeat, record, finish.

Every attempt at a round (a delivery a worker claimed) gets a fresh token on
the row.  Each write here is a conditional UPDATE on the round's id *and* that
token, so an attempt that was given up on (its worker presumed lost, the round
queued again and claimed by another attempt) cannot write progress, the
round's end or its model over its successor's: its first write finds the row
no longer its own and raises :class:`AttemptSuperseded`, and the attempt stops.

Depends on nothing else in the worker, so training, publishing and recovery
can all use it without import circles.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable

from sqlalchemy import select, update

from models import RoundStatus, TrainingRound, utcnow
from models.db import session_scope
from models.settings import Settings

from .eta import EtaEstimator, Phase

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0


class Cancelled(Exception):
    """The admin cancelled the round; raised between steps."""


class AttemptSuperseded(Exception):
    """This attempt no longer owns the round: it was recovered and handed on.

    Nothing more may be written for it (no progress, no end, no model).
    """


def owned_by(round_id: int, token: str | None):
    """The WHERE clause of every write an attempt makes: this round, this attempt.

    ``None`` stands for a row no attempt ever claimed (a row written by hand,
    as tests do); a claimed row is never matched by it.
    """
    mine = (TrainingRound.attempt_token.is_(None) if token is None
            else TrainingRound.attempt_token == token)
    return (TrainingRound.id == round_id) & mine


def new_token() -> str:
    return uuid.uuid4().hex


def claim(settings: Settings, round_id: int, worker: str) -> str | None:
    """queued -> running with a new attempt token, atomically.

    Returns the token, or None when the round is not queued (another delivery
    took it, or it was cancelled or finished).
    """
    token = new_token()
    with session_scope(settings.database_url) as s:
        now = utcnow()
        claimed = s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id, TrainingRound.status == RoundStatus.QUEUED)
            .values(status=RoundStatus.RUNNING, started_at=now, heartbeat_at=now,
                    worker=worker[:200], phase="starting", progress=0.0, eta_seconds=None,
                    attempt_token=token, attempts=TrainingRound.attempts + 1)
        ).rowcount
    return token if claimed else None


def record(settings: Settings, round_id: int, token: str | None = None, **values: Any) -> None:
    """Write ``values`` on the round while this attempt owns it; else AttemptSuperseded."""
    with session_scope(settings.database_url) as s:
        written = s.execute(update(TrainingRound).where(owned_by(round_id, token))
                            .values(**values)).rowcount
    if not written:
        raise AttemptSuperseded(round_id)


def finish(settings: Settings, round_id: int, token: str | None = None, **values: Any) -> bool:
    """Write the round's end while this attempt owns it; False (nothing written) if not."""
    now = utcnow()
    with session_scope(settings.database_url) as s:
        written = s.execute(
            update(TrainingRound).where(owned_by(round_id, token))
            .values(finished_at=now, heartbeat_at=now, eta_seconds=None, **values)
        ).rowcount
    return bool(written)


def round_status(settings: Settings, round_id: int) -> RoundStatus | None:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id))


class Progress:
    """Writes phase, progress, ETA and heartbeat to the round row, at most once a second.

    Phases are given as (start, end) fractions of the whole round, so the bar
    moves steadily however the time splits between feature extraction,
    training and scoring.  Each write checks the attempt still owns the row.
    """

    def __init__(self, settings: Settings, round_id: int, token: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.round_id, self.token = settings, round_id, token
        self.clock = clock
        self._last = 0.0
        self._started = clock()
        self.span = (0.0, 1.0)
        # Time left, from the round's plan of phases (worker/eta.py); without a
        # plan, a straight extrapolation of the bar.
        self.eta: EtaEstimator | None = None
        # Set by the heartbeat thread when it finds the row taken over.
        self.lost = threading.Event()

    def plan(self, phases: list[Phase]) -> None:
        self.eta = EtaEstimator(phases, clock=self.clock)

    def phase(self, start: float, end: float, message: str, name: str | None = None,
              units: float | None = None) -> None:
        self.span = (start, end)
        if self.eta is not None and name is not None:
            self.eta.start(name, units)
        self(0.0, message, force=True)

    def units(self, units: float) -> None:
        """The current phase's real amount of work, once known."""
        if self.eta is not None:
            self.eta.set_units(units)

    def skip(self, name: str) -> None:
        if self.eta is not None:
            self.eta.skip(name)

    def seconds_left(self, overall: float) -> float | None:
        if self.eta is not None:
            return self.eta.seconds_left()
        elapsed = self.clock() - self._started
        return elapsed * (1 - overall) / overall if overall > 0.05 else None

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = self.clock()
        if self.eta is not None:
            self.eta.update(fraction)
        if not force and now - self._last < HEARTBEAT_EVERY_S:
            return
        self._last = now
        lo, hi = self.span
        overall = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        eta = self.seconds_left(overall)
        self.record(progress=overall, phase=message[:200], heartbeat_at=utcnow(),
                    eta_seconds=eta)

    def record(self, **values: Any) -> None:
        """Write on the round as this attempt (AttemptSuperseded when it is not ours)."""
        if self.lost.is_set():
            raise AttemptSuperseded(self.round_id)
        try:
            record(self.settings, self.round_id, self.token, **values)
        except AttemptSuperseded:
            self.lost.set()
            raise

    def _state(self) -> tuple[RoundStatus | None, str | None]:
        with session_scope(self.settings.database_url) as s:
            row = s.execute(select(TrainingRound.status, TrainingRound.attempt_token)
                            .where(TrainingRound.id == self.round_id)).one_or_none()
        return (row[0], row[1]) if row else (None, None)

    def superseded(self) -> bool:
        if self.lost.is_set():
            return True
        status, token = self._state()
        if token != self.token or status is None:
            self.lost.set()
            return True
        return False

    def cancelled(self) -> bool:
        """Should the work stop? (Cancelled by the admin, or no longer this attempt's.)"""
        if self.lost.is_set():
            return True
        status, token = self._state()
        if token != self.token:
            self.lost.set()
            return True
        return status == RoundStatus.CANCELLED

    def check(self) -> None:
        """Raise AttemptSuperseded or Cancelled when the work must stop."""
        if self.superseded():
            raise AttemptSuperseded(self.round_id)
        if self.cancelled():
            raise Cancelled()


class Heartbeat:
    """Beats on the row from a thread while an attempt runs, between progress writes.

    A step that reports no progress for a while (building the network, saving
    the model, a long epoch) still beats, so a stale heartbeat means the
    worker is gone, not busy.  When the row is no longer this attempt's the
    thread flags ``progress.lost`` and stops; the attempt stops at its next
    progress write or check.
    """

    def __init__(self, progress: Progress, every_s: float):
        self.progress, self.every_s = progress, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{progress.round_id}",
                                        daemon=True)

    def _run(self) -> None:
        p = self.progress
        while not self._stop.wait(self.every_s):
            try:
                values: dict[str, Any] = {"heartbeat_at": utcnow()}
                if p.eta is not None:
                    # The estimate counts down between progress reports too (a
                    # long epoch), so the page and the CLI never show a stale one.
                    values["eta_seconds"] = p.eta.seconds_left()
                with session_scope(p.settings.database_url) as s:
                    written = s.execute(update(TrainingRound)
                                        .where(owned_by(p.round_id, p.token))
                                        .values(**values)).rowcount
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("heartbeat of round %s not written", p.round_id, exc_info=True)
                continue
            if not written:
                p.lost.set()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def heartbeat_interval(settings: Settings) -> float:
    """Several beats per stale interval, so one slow write never looks like a lost worker."""
    return max(0.5, min(settings.round_stale_seconds / 5, 5.0))
