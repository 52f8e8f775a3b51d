"""Measure cells for the curator: a describe run, recorded on its ``describe_runs`` row.

The run claims its row ``queued -> running`` atomically (a duplicate delivery
does nothing), lists the project's cells without a measurement of the current
DESCRIPTOR_VERSION (or whose last attempt failed), and measures them in
chunks with the descriptor code the rounds use (worker/ml/descriptors), read
from and written to the same FeatureStore, so a cell is segmented once for
both.  Each chunk is committed with the progress and a heartbeat; a cell
whose file cannot be read gets a row saying why and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import or_, select, update

from models import CellMeasurement, DescribeRun, DescribeStatus, Image, ImportJob
from models.base import utcnow
from models.db import session_scope
from models.settings import Settings
from worker.ml.descriptors import (
    DESCRIPTOR_VERSION, FEATURE_NAMES, cached_descriptors, descriptor_key, describe_path,
)
from worker.ml.feature_store import FeatureStore

from .describe_launch import DescribeBusy, create_run, enqueue_run

log = logging.getLogger(__name__)

CHUNK = 16  # cells per commit: progress every few seconds on one core
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
MISSING_FILE = "The image file is missing from storage."
UNREADABLE = "The image file cannot be decoded."


@dataclass(frozen=True)
class Cell:
    image_id: int
    sha256: str
    path: str
    width: int
    height: int


def measurement_values(vector: np.ndarray, width: int, height: int) -> dict:
    """The columns of ``cell_measurements`` from one descriptor vector.

    Descriptor areas are shares of the working square; the same shares of the
    stored image are its areas in pixels (the square is a resize of the whole
    image, so a share of it is that share of the original, also when the
    image is not square).
    """
    v = {name: float(vector[i]) for name, i in _INDEX.items()}
    found = v["nucleus_found"] > 0.5
    pixels = float(width * height)
    return {
        "nucleus_found": found,
        "cytoplasm_found": v["cytoplasm_found"] > 0.5,
        "nucleus_area_px": v["nucleus_area"] * pixels if found else None,
        "cell_area_px": v["cell_area"] * pixels if found else None,
        "nucleus_lobes": int(round(v["nucleus_lobes"])) if found else None,
        "nucleus_to_cell": v["nucleus_to_cell"] if found else None,
        "nucleus_circularity": v["nucleus_circularity"] if found else None,
        "nucleus_solidity": v["nucleus_solidity"] if found else None,
        "chromatin_density": v["chromatin_mean"] if found else None,
        "chromatin_contrast": v["glcm_contrast"] if found else None,
    }


def _empty_values() -> dict:
    return dict.fromkeys(measurement_values(np.zeros(len(FEATURE_NAMES)), 1, 1), None)


def cells_to_measure(session, project_id: int) -> list[Cell]:
    """Cells with no measurement of this descriptor version, or whose last one failed."""
    rows = session.execute(
        select(Image.id, Image.sha256, Image.storage_path, Image.width, Image.height)
        .outerjoin(CellMeasurement, CellMeasurement.image_id == Image.id)
        .where(Image.project_id == project_id,
               or_(CellMeasurement.image_id.is_(None),
                   CellMeasurement.descriptor_version != DESCRIPTOR_VERSION,
                   CellMeasurement.error.is_not(None)))
        .order_by(Image.id)).all()
    return [Cell(r.id, r.sha256, r.storage_path, r.width, r.height) for r in rows]


def _why(reason: str) -> str:
    return MISSING_FILE if reason == "file not found" else UNREADABLE


def measure_chunk(store: FeatureStore, storage_dir, cells: list[Cell]) -> list[tuple[dict, str | None]]:
    """(values, error) per cell.  The descriptor code skips unreadable files with a
    reason; anything else it raises is taken cell by cell, so one odd image costs
    only itself."""
    paths = [storage_dir / c.path for c in cells]
    failures: list[tuple[int, str]] = []
    try:
        feats, ok = cached_descriptors(store, [c.sha256 for c in cells], paths, failures=failures)
    except Exception:  # noqa: BLE001 -- retried one by one below
        log.exception("describing a chunk failed; measuring its cells one by one")
        out = []
        for cell, path in zip(cells, paths):
            try:
                out.append((measurement_values(describe_path(path), cell.width, cell.height), None))
            except Exception as exc:  # noqa: BLE001 -- the cell's own problem
                reason = getattr(exc, "reason", None)
                out.append((_empty_values(), _why(reason) if reason else
                            f"The cell could not be measured ({type(exc).__name__})."))
        return out
    reasons = dict(failures)
    return [(measurement_values(feats[i], c.width, c.height), None) if ok[i]
            else (_empty_values(), _why(reasons.get(i, "")))
            for i, c in enumerate(cells)]


def run_describe(settings: Settings, run_id: int,
                 progress: Callable[[int, int], None] | None = None) -> str:
    """Measure the run's project's unmeasured cells; returns the final status."""
    with session_scope(settings.database_url) as s:
        claimed = s.execute(update(DescribeRun).where(
            DescribeRun.id == run_id, DescribeRun.status == DescribeStatus.QUEUED).values(
            status=DescribeStatus.RUNNING, started_at=utcnow(), heartbeat_at=utcnow(),
            descriptor_version=DESCRIPTOR_VERSION)).rowcount
        s.commit()
        if not claimed:
            return "not queued"
        project_id = s.get(DescribeRun, run_id).project_id
        cells = cells_to_measure(s, project_id)
    _set(settings, run_id, cells_total=len(cells))
    try:
        store = FeatureStore(settings.storage_dir / "features", descriptor_key("cell"))
        done = failed = 0
        for lo in range(0, len(cells), CHUNK):
            chunk = cells[lo:lo + CHUNK]
            results = measure_chunk(store, settings.storage_dir, chunk)
            with session_scope(settings.database_url) as s:
                for cell, (values, error) in zip(chunk, results):
                    s.merge(CellMeasurement(image_id=cell.image_id, project_id=project_id,
                                            descriptor_version=DESCRIPTOR_VERSION, error=error,
                                            measured_at=utcnow(), **values))
                done += len(chunk)
                failed += sum(error is not None for _, error in results)
                s.execute(update(DescribeRun).where(DescribeRun.id == run_id).values(
                    cells_done=done, cells_failed=failed, heartbeat_at=utcnow()))
                s.commit()
            if progress is not None:
                progress(done, len(cells))
        _set(settings, run_id, status=DescribeStatus.SUCCEEDED, finished_at=utcnow())
        return DescribeStatus.SUCCEEDED.value
    except Exception as exc:  # noqa: BLE001 -- the row must end; details go to the log
        log.exception("describe run %s failed", run_id)
        _set(settings, run_id, status=DescribeStatus.FAILED, finished_at=utcnow(),
             error=f"Unexpected error in the worker ({type(exc).__name__}); the cells "
                   "measured so far are kept.")
        return DescribeStatus.FAILED.value


def describe_after_import(settings: Settings, celery, job_id: int) -> int | None:
    """Queue a run for an import job's project once it imported cells; the run's id."""
    with session_scope(settings.database_url) as s:
        job = s.get(ImportJob, job_id)
        if job is None or not (job.report or {}).get("imported"):
            return None
        try:
            run = create_run(s, job.project_id, trigger="import",
                             stale_seconds=settings.round_stale_seconds,
                             allow_behind_running=True)
        except DescribeBusy:
            return None  # a queued run will measure these cells too
        enqueue_run(s, celery, run)
        return run.id


def _set(settings: Settings, run_id: int, **values) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(DescribeRun).where(DescribeRun.id == run_id).values(**values))
        s.commit()

