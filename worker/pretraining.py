"""An admin's backbone pretraining on its row: SimSiam over the project's pool (issue 15).

Claimed ``queued -> running`` atomically (a duplicate delivery does nothing).
Progress, the running loss and time left are written at most once a second;
the cancel check between steps reads the row (at most once a second too), so
an admin's cancel stops the run before its next step and nothing is saved.
Always ends ``succeeded`` with a weights file under
``<storage>/backbones/pretrain-<id>.h5``, ``failed`` with a message for the
admin (a refusal's text, or "Unexpected error in the worker (Type)" with the
traceback in the worker log), or ``cancelled``.

The pool is every image of the project's pool split, labeled or not (no label
is read); the test split is left out, as it is out of every training step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update

from models import Image, PretrainingRun, PretrainingStatus, Split, utcnow
from models.db import session_scope
from models.settings import Settings

log = logging.getLogger(__name__)

BACKBONES_DIR = "backbones"

# A second listener for every step (the CLI's progress bar): step, total, loss.
ProgressEcho = Callable[[int, int, float], None]


def weights_relpath(run_id: int) -> str:
    return f"{BACKBONES_DIR}/pretrain-{run_id}.h5"


def _update(settings: Settings, run_id: int, **values) -> bool:
    """Update the row while it is still running; False when it is not (cancelled)."""
    with session_scope(settings.database_url) as s:
        done = s.execute(update(PretrainingRun).where(
            PretrainingRun.id == run_id, PretrainingRun.status == PretrainingStatus.RUNNING)
            .values(**values))
        return done.rowcount == 1


class _RowReporter:
    """Progress to the row (throttled), and the cancel check the training loop asks."""

    def __init__(self, settings: Settings, run_id: int, interval: float = 1.0,
                 echo: ProgressEcho | None = None):
        self.settings, self.run_id, self.interval = settings, run_id, interval
        self.echo = echo
        self.start = time.monotonic()
        self.first: tuple[float, int] | None = None  # after the first step (graph tracing)
        self.last_write = self.last_check = 0.0
        self.cancelled = False

    def progress(self, step: int, total: int, loss: float) -> None:
        if self.echo is not None:
            self.echo(step, total, loss)
        now = time.monotonic()
        if self.first is None:
            self.first = (now, step)
        if now - self.last_write < self.interval and step != total:
            return
        self.last_write = now
        t0, s0 = self.first
        eta = (now - t0) / (step - s0) * (total - step) if step > s0 else None
        if not _update(self.settings, self.run_id, progress=step / max(total, 1),
                       phase=f"step {step} of {total}, loss {loss:.4f}", eta_seconds=eta,
                       heartbeat_at=utcnow()):
            self.cancelled = True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_check >= self.interval:
            self.last_check = now
            with session_scope(self.settings.database_url) as s:
                status = s.scalar(select(PretrainingRun.status)
                                  .where(PretrainingRun.id == self.run_id))
            self.cancelled = status != PretrainingStatus.RUNNING
        return self.cancelled

    def epoch(self, settings: Settings, history: list[float]):
        def on_epoch(epoch: int, loss: float) -> None:
            history.append(round(loss, 6))
            _update(settings, self.run_id, loss_history=list(history), heartbeat_at=utcnow())
        return on_epoch


def pool_paths(settings: Settings, project_id: int) -> list[Path]:
    """The image files of the project's pool split (labeled or not), in id order."""
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Image.storage_path).where(
            Image.project_id == project_id, Image.split == Split.POOL).order_by(Image.id)).all()
    return [settings.storage_dir / p for p in rows]


def run_pretraining_row(settings: Settings, run_id: int, *, check_interval: float = 1.0,
                        echo: ProgressEcho | None = None) -> PretrainingStatus | None:
    from worker.ml.pretrain import PretrainCancelled, PretrainConfig, PretrainError, pretrain
    from worker.ml.weights import WeightsError

    with session_scope(settings.database_url) as s:
        claimed = s.execute(update(PretrainingRun).where(
            PretrainingRun.id == run_id, PretrainingRun.status == PretrainingStatus.QUEUED)
            .values(status=PretrainingStatus.RUNNING, phase="reading the pool",
                    started_at=utcnow(), heartbeat_at=utcnow()))
        if claimed.rowcount != 1:
            log.info("pretraining run %s is not queued; nothing to do", run_id)
            return None
        run = s.get(PretrainingRun, run_id)
        project_id = run.project_id
        config = PretrainConfig(epochs=run.epochs, input_size=run.image_size,
                                batch_size=run.batch_size)
    reporter = _RowReporter(settings, run_id, check_interval, echo)
    history: list[float] = []
    relpath = weights_relpath(run_id)
    try:
        paths = pool_paths(settings, project_id)
        _update(settings, run_id, phase=f"pretraining on {len(paths)} cells (first step "
                                         "builds the graph)", heartbeat_at=utcnow())
        result = pretrain(paths, settings.storage_dir / relpath, config,
                          progress=reporter.progress, should_stop=reporter.should_stop,
                          on_epoch=reporter.epoch(settings, history))
    except PretrainCancelled:
        log.info("pretraining run %s cancelled", run_id)
        return PretrainingStatus.CANCELLED
    except (PretrainError, WeightsError) as exc:
        _update(settings, run_id, status=PretrainingStatus.FAILED, error=str(exc),
                phase="refused", eta_seconds=None, finished_at=utcnow())
        return PretrainingStatus.FAILED
    except Exception as exc:
        log.exception("pretraining run %s failed", run_id)
        _update(settings, run_id, status=PretrainingStatus.FAILED, phase="failed",
                eta_seconds=None,
                error=f"Unexpected error in the worker ({type(exc).__name__})",
                finished_at=utcnow())
        return PretrainingStatus.FAILED
    except BaseException:
        # Ctrl-C in `hemaloop pretrain`, a worker's warm shutdown: not left 'running'
        # (a redelivered task would find it not queued and do nothing).
        _update(settings, run_id, status=PretrainingStatus.FAILED, phase="interrupted",
                eta_seconds=None, error="Interrupted before it finished; start it again.",
                finished_at=utcnow())
        raise
    stats = {"cells": result.cells, "unreadable": result.unreadable, "steps": result.steps,
             "epochs_done": round(result.epochs_done, 3), "seconds": round(result.seconds, 1),
             "projection_spread": [round(v, 5) for v in result.collapse_std]}
    if not _update(settings, run_id, status=PretrainingStatus.SUCCEEDED, progress=1.0,
                   phase="done", eta_seconds=None, loss_history=result.loss_history,
                   stats=stats, weights_path=relpath, finished_at=utcnow()):
        (settings.storage_dir / relpath).unlink(missing_ok=True)
        return PretrainingStatus.CANCELLED  # cancelled after its last step
    return PretrainingStatus.SUCCEEDED
