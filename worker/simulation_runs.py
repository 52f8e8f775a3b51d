"""An admin's strategy comparison on its row: the simulator over a project's
own labeled cells (the same run as ``hemaloop simulate``).

Claimed ``queued -> running`` atomically (a duplicate delivery does nothing),
progress and time left written at most once a second, and always ends
``succeeded``, ``failed`` with a message for the admin (a refusal's text, or
"Unexpected error in the worker (Type)" with the traceback in the worker log),
or ``cancelled``: an admin's cancel sets the row's status, and the run stops at
its next progress report (between two rounds of the simulation, or between two
batches of backbone features), because each report only updates a row that is
still ``running``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select, update

from models import Image, Project, SimulationRun, SimulationStatus, Split, utcnow
from models.db import session_scope
from models.labels import labeled_images
from models.settings import Settings

log = logging.getLogger(__name__)


class _AsOracle:
    """The project with its reference labels counted as truth; everything else
    (classes, reading rules) is the project's own."""

    train_on_reference = True

    def __init__(self, project: Project):
        self._project = project

    def __getattr__(self, name: str):
        return getattr(self._project, name)


def _project_cells(settings: Settings, project_id: int):
    """Every cell of the project with a final class label (pool and test), as a LabeledSet."""
    from worker.simulation.dataset import LabeledSet

    with session_scope(settings.database_url) as s:
        project = s.get(Project, project_id)
        # The simulator reveals labels as an oracle: reference labels count
        # as truth here, as they do for the test split.
        as_oracle = _AsOracle(project)
        items = labeled_images(s, as_oracle, Split.POOL) + labeled_images(s, as_oracle, Split.TEST)
        shas = dict(s.execute(select(Image.id, Image.sha256)
                              .where(Image.project_id == project_id)).all())
        classes = [(c.id, c.name) for c in project.classes]
    used = sorted({x.label_class_id for x in items})
    names = [name for cid, name in classes if cid in used]
    index = {cid: k for k, cid in enumerate(c for c, _ in classes if c in used)}
    return LabeledSet([Path(x.storage_path) for x in items], [shas[x.image_id] for x in items],
                      np.array([index[x.label_class_id] for x in items], dtype=np.int64), names)


class SimulationCancelled(Exception):
    """The admin cancelled the run; its row already says so."""


def _update(settings: Settings, run_id: int, **values) -> bool:
    """Update the row while it is still running; False when it is not (cancelled)."""
    with session_scope(settings.database_url) as s:
        done = s.execute(update(SimulationRun).where(
            SimulationRun.id == run_id, SimulationRun.status == SimulationStatus.RUNNING)
            .values(**values))
        return done.rowcount == 1


# Where each phase sits on the run's progress bar: reading the backbone's
# features (quick when cached), then the simulated rounds.
FEATURES_SPAN, ROUNDS_SPAN = (0.0, 0.2), (0.2, 1.0)


class _Progress:
    """The run's progress callback: overall progress, and time left in the current
    phase from that phase's own measured rate (features and rounds go at very
    different speeds, so one rate for both would mislead)."""

    def __init__(self, settings: Settings, run_id: int):
        self.settings, self.run_id = settings, run_id
        self.phase_key: str | None = None
        self.phase_start = self.last_write = 0.0
        self.first_done = 0  # the count at the phase's first report: its rate starts there

    def __call__(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        key = "features" if message.startswith("features") else "rounds"
        if key != self.phase_key:
            self.phase_key, self.phase_start = key, now
            self.first_done = done
        if now - self.last_write < 1.0 and done != total:
            return
        self.last_write = now
        lo, hi = FEATURES_SPAN if key == "features" else ROUNDS_SPAN
        share = done / max(total, 1)
        measured = done - self.first_done
        eta = ((now - self.phase_start) / measured * (total - done)) if measured > 0 else None
        if not _update(self.settings, self.run_id, progress=lo + (hi - lo) * share,
                       phase=message[:200], eta_seconds=eta, heartbeat_at=utcnow()):
            raise SimulationCancelled()


def run_simulation_row(settings: Settings, run_id: int) -> SimulationStatus | None:
    from worker.ml.selection import SelectionError
    from worker.simulation.dataset import SimulationRefused
    from worker.simulation.loop import HeadConfig
    from worker.simulation.run import run_simulation

    with session_scope(settings.database_url) as s:
        claimed = s.execute(update(SimulationRun).where(
            SimulationRun.id == run_id, SimulationRun.status == SimulationStatus.QUEUED)
            .values(status=SimulationStatus.RUNNING, phase="reading the labeled cells",
                    started_at=utcnow(), heartbeat_at=utcnow()))
        if claimed.rowcount != 1:
            log.info("simulation run %s is not queued; nothing to do", run_id)
            return None
        run = s.get(SimulationRun, run_id)
        project_id, params = run.project_id, dict(run.params)
        # The features the project's rounds use, unless the run asked for others.
        features = params.get("features") or s.get(Project, project_id).feature_sources
    out_dir = Path("simulations") / f"run-{run_id}"
    progress = _Progress(settings, run_id)

    try:
        data = _project_cells(settings, project_id)
        result = run_simulation(
            data, params["strategies"], initial=int(params["initial"]),
            batch=int(params["batch"]), rounds=int(params["rounds"]),
            repeats=int(params["repeats"]), out_dir=settings.storage_dir / out_dir,
            cache_dir=settings.storage_dir / "features", input_size=settings.input_size,
            weights=settings.backbone_weights, image_root=settings.storage_dir,
            config=HeadConfig(epochs=settings.head_epochs, batch_size=settings.batch_size),
            progress=progress, features=features)
    except SimulationCancelled:
        log.info("simulation run %s cancelled", run_id)
        return SimulationStatus.CANCELLED
    except (SimulationRefused, SelectionError) as exc:
        _update(settings, run_id, status=SimulationStatus.FAILED, error=str(exc),
                phase="refused", finished_at=utcnow())
        return SimulationStatus.FAILED
    except Exception as exc:
        log.exception("simulation run %s failed", run_id)
        _update(settings, run_id, status=SimulationStatus.FAILED, phase="failed",
                error=f"Unexpected error in the worker ({type(exc).__name__})",
                finished_at=utcnow())
        return SimulationStatus.FAILED
    if not _update(settings, run_id, status=SimulationStatus.SUCCEEDED, progress=1.0,
                   phase="done", eta_seconds=None, result=result.summary(),
                   output_dir=str(out_dir), finished_at=utcnow()):
        return SimulationStatus.CANCELLED  # cancelled after its last round
    return SimulationStatus.SUCCEEDED
