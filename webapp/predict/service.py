"""One path for the Predict page and API v1: which model, spool, ask the worker,
merge the answer into the manifest (so the page can show the files and add one)."""

from __future__ import annotations

from flask import current_app
from limits import parse
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from models import ModelVersion, Project, Role, User
from worker import predict_spool
from worker.predict_spool import discard, expire, spool_bytes, write_manifest

from ..extensions import limiter
from . import client
from .uploads import Spooled, spool_uploads


# Requests per person: a reader at the Predict page sends a few a minute.
PREDICT_RATE = "30 per minute"


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
    expire(settings.instance_dir)
    if spool_bytes(settings.instance_dir) >= predict_spool.SPOOL_LIMIT_BYTES:
        raise PredictRefused(503, "The server's store of uploads to predict is full (uploads "
                                  "are kept for a day). Try again later; to predict many "
                                  "cells, import them into a project.")
    mine = spool_bytes(settings.instance_dir, user.id)
    if mine >= predict_spool.USER_SHARE_BYTES:
        raise PredictRefused(429, f"You have {_mib(mine)} of uploads to predict from the last "
                                  f"day; each person may keep {_mib(predict_spool.USER_SHARE_BYTES)}"
                                  ". Try again later; to predict many cells, import them into "
                                  "a project.")
    spooled = spool_uploads(settings, files, project_id=project.id, user_id=user.id,
                            version_id=version.id)
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
                                                   "top", "heatmap")})
    spooled.manifest["result"] = {
        "model_version_id": version.id,
        "note": answer.get("note") if answer else None,
        "grid": answer.get("grid") if answer else None,
        "worker_ms": answer.get("ms") if answer else None,
    }
    write_manifest(spooled.folder, spooled.manifest)
    return spooled, version
