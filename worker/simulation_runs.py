"""An admin's strategy comparison on its row: the simulator over a project's
own labeled cells (the same run as ``hemaloop simulate``).

Claimed ``queued -> running`` atomically (a duplicate delivery does nothing),
progress written at most once a second, and always ends ``succeeded`` or
``failed`` with a message for the admin (a refusal's text, or "Unexpected
error in the worker (Type)" with the traceback in the worker log).
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


def _update(settings: Settings, run_id: int, **values) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(SimulationRun).where(SimulationRun.id == run_id).values(**values))


def run_simulation_row(settings: Settings, run_id: int) -> SimulationStatus | None:
    from worker.ml.selection import SelectionError
    from worker.simulation.dataset import SimulationRefused
    from worker.simulation.loop import HeadConfig
    from worker.simulation.run import run_simulation

    with session_scope(settings.database_url) as s:
        claimed = s.execute(update(SimulationRun).where(
            SimulationRun.id == run_id, SimulationRun.status == SimulationStatus.QUEUED)
            .values(status=SimulationStatus.RUNNING, phase="reading the labeled cells"))
        if claimed.rowcount != 1:
            log.info("simulation run %s is not queued; nothing to do", run_id)
            return None
        run = s.get(SimulationRun, run_id)
        project_id, params = run.project_id, dict(run.params)
    out_dir = Path("simulations") / f"run-{run_id}"
    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            _update(settings, run_id, progress=done / max(total, 1), phase=message[:200])

    try:
        data = _project_cells(settings, project_id)
        result = run_simulation(
            data, params["strategies"], initial=int(params["initial"]),
            batch=int(params["batch"]), rounds=int(params["rounds"]),
            repeats=int(params["repeats"]), out_dir=settings.storage_dir / out_dir,
            cache_dir=settings.storage_dir / "features", input_size=settings.input_size,
            weights=settings.backbone_weights, image_root=settings.storage_dir,
            config=HeadConfig(epochs=settings.head_epochs, batch_size=settings.batch_size),
            progress=progress)
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
    _update(settings, run_id, status=SimulationStatus.SUCCEEDED, progress=1.0, phase="done",
            result=result.summary(), output_dir=str(out_dir), finished_at=utcnow())
    return SimulationStatus.SUCCEEDED
