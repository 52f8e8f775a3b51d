"""One path for the Predict page and API v1: which model, spool, ask the worker,
merge the answer into the manifest (so the page can show the files and add one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flask import current_app
from limits import parse
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from models import ModelVersion, Project, Role, User
from models.files import atomic_write
from worker import predict_spool
from worker.predict_spool import discard, heatmap_name, note_spooled, write_manifest

from ..extensions import limiter
from . import client
from .overlay import overlay_png
from .uploads import Spooled, spool_uploads


# Requests per person: a reader at the Predict page sends a few a minute; a
# program sending one cell a request, up to two a second.
PREDICT_RATE = "120 per minute"


class PredictRefused(Exception):
    """The request cannot be predicted; ``status`` and the message are for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_may_predict(project: Project, user: User) -> None:
    """Readers of a blind-reading project do not see the model's view of cells
    (the labeling page hides it): nor do they here, where they could upload one."""
    if project.blind_reading and not user.has_role(Role.CURATOR):
        raise PredictRefused(403, f"Project {project.name} reads blind: its readers do not "
                                  "see the model's predictions, here either.")


def check_rate(user: User) -> None:
    """At most PREDICT_RATE requests per person (page and API together), counted in
    the limiter's storage (Redis in production), so a script cannot keep the
    predict worker busy for everyone else."""
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX", "")
    try:
        allowed = limiter.limiter.hit(parse(PREDICT_RATE), prefix, "predict-user", str(user.id))
    except Exception:  # noqa: BLE001 -- its storage is down: predicting matters more
        current_app.logger.warning("predict rate limit not checked", exc_info=True)
        return
    if not allowed:
        raise PredictRefused(429, f"Too many predictions at once: each person may send "
                                  f"{PREDICT_RATE}. Wait a minute; to predict many cells, "
                                  "send them together (up to 50 a request) or import them.")


def _mib(n: int) -> str:
    return f"{n / 1024 ** 2:,.0f} MiB"


def choose_version(session: Session, project: Project, version_id: int | None) -> ModelVersion:
    if version_id is not None:
        version = session.get(ModelVersion, version_id)
        if version is None or version.project_id != project.id:
            raise PredictRefused(404, f"Project {project.name} has no model version {version_id}.")
        return version
    version = session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                        ModelVersion.is_active))
    if version is None:
        raise PredictRefused(409, f"Project {project.name} has no active model yet: train a "
                                  "round (Admin) before predicting.")
    return version


def versions_of(session: Session, project: Project) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id)
                                .order_by(ModelVersion.id.desc())))


def run(settings, session: Session, project: Project, user: User, files: list[FileStorage],
        version_id: int | None) -> tuple[Spooled, ModelVersion]:
    """Spool and predict; raises PredictRefused, uploads.NothingToPredict,
    client.PredictUnavailable or client.PredictFailed.  Files that fail
    validation are in the manifest with their reason, and the rest is predicted."""
    check_may_predict(project, user)
    check_rate(user)
    version = choose_version(session, project, version_id)
    total, per_user = predict_spool.usage(settings.instance_dir)
    if total >= predict_spool.SPOOL_LIMIT_BYTES:
        raise PredictRefused(503, "The server's store of uploads to predict is full (uploads "
                                  "are kept for a day). Try again later; to predict many "
                                  "cells, import them into a project.")
    mine = per_user.get(user.id, 0)
    if mine >= predict_spool.USER_SHARE_BYTES:
        raise PredictRefused(429, f"You have {_mib(mine)} of uploads to predict from the last "
                                  f"day; each person may keep {_mib(predict_spool.USER_SHARE_BYTES)}"
                                  ". Try again later; to predict many cells, import them into "
                                  "a project.")
    spooled = spool_uploads(settings, files, project_id=project.id, user_id=user.id,
                            version_id=version.id)
    note_spooled(settings.instance_dir, user.id,
                 sum((spooled.folder / name).stat().st_size for name in spooled.stored))
    answer = None
    if spooled.stored:
        try:
            answer = client.predict(version.id, spooled.batch, spooled.stored)
        except (client.PredictUnavailable, client.PredictFailed):
            discard(spooled.folder)  # nothing to show or add from it
            raise
        by_file = {item["file"]: item for item in answer["items"]}
        for entry in spooled.entries:
            item = by_file.get(entry["stored"]) if entry["stored"] else None
            if item is None:
                continue
            if item.get("error"):
                entry["error"] = item["error"]
            else:
                entry.update({k: item[k] for k in ("predicted_class", "class_id", "confidence",
                                                   "top")})
                # Drawn when first shown (heatmap_file), not while the request waits.
                entry["cam"] = item.get("cam")
                entry["heatmap"] = heatmap_name(entry["stored"]) if entry["cam"] else None
    spooled.manifest["result"] = {
        "model_version_id": version.id,
        "note": answer.get("note") if answer else None,
        "grid": answer.get("grid") if answer else None,
        "worker_ms": answer.get("ms") if answer else None,
        "worker_lookup_ms": answer.get("lookup_ms") if answer else None,
    }
    write_manifest(spooled.folder, spooled.manifest)
    return spooled, version


def heatmap_file(folder: Path, entry: dict) -> Path | None:
    """The entry's Grad-CAM overlay, drawn from its map the first time it is asked
    for and kept beside the upload; None when the cell has no map (or it cannot
    be drawn: the batch expired meanwhile, a map that is not a grid of numbers)."""
    if not entry.get("heatmap") or not entry.get("stored"):
        return None
    path = folder / entry["heatmap"]
    if path.is_file():
        return path
    if not (folder / predict_spool.MANIFEST).is_file():
        return None  # expired: drawing would bring the folder back
    try:
        cam = np.asarray(entry.get("cam"), dtype=np.float32)
        if cam.ndim != 2 or not cam.size or not np.isfinite(cam).all():
            return None
        png = overlay_png(folder / entry["stored"], cam)
        atomic_write(path, lambda tmp: tmp.write_bytes(png), suffix=".png")
    except (OSError, ValueError, TypeError):
        current_app.logger.warning("could not draw the heatmap %s", path, exc_info=True)
        return None
    return path
