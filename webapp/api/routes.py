from __future__ import annotations

from flask import abort, request
from flask_login import current_user
from sqlalchemy import select

from models import Project, ReviewQueue, Role, TrainingRound

from ..admin.overview import project_overview
from ..auth.access import require_cell, require_project, visible_projects
from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..label.queue import active_version, ranked
from . import bp


def _round_json(rnd: TrainingRound) -> dict:
    return {
        "id": rnd.id, "project_id": rnd.project_id, "status": rnd.status.value,
        "progress": rnd.progress, "phase": rnd.phase, "trigger": rnd.trigger,
        "created_at": rnd.created_at.isoformat(),
        "started_at": rnd.started_at.isoformat() if rnd.started_at else None,
        "finished_at": rnd.finished_at.isoformat() if rnd.finished_at else None,
        "error": rnd.error, "warnings": rnd.warnings or [], "timings": rnd.timings or {},
        "n_train": rnd.n_train, "n_test": rnd.n_test, "n_scored": rnd.n_scored,
    }


@bp.get("/projects")
@role_required(Role.PATHOLOGIST)
def projects():
    db = get_db()
    out = []
    for project in db.scalars(visible_projects(db, current_user).order_by(Project.id)):
        o = project_overview(db, project, n_rounds=1)
        out.append({
            "id": project.id, "name": project.name,
            "classes": [{"name": c.name, "hotkey": c.hotkey, "colour": c.colour}
                        for c in project.classes],
            "pool": o.pool, "test": o.test, "reader_labeled": o.reader_labeled,
            "training_labels": o.training_labels,
            "active_model": {"id": o.active.id, "round_id": o.active.round_id,
                             "metrics": o.active.metrics} if o.active else None,
        })
    return {"projects": out}


@bp.get("/projects/<int:project_id>/queue")
@role_required(Role.PATHOLOGIST)
def queue(project_id: int):
    """The ranked queue: what readers will see next, with suggestions."""
    db = get_db()
    project = require_project(db, current_user, project_id)
    raw = request.args.get("limit", "50")
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= 1000:
        abort(400, description="limit must be a whole number from 1 to 1000")
    version = active_version(db, project.id)
    names = {c.id: c.name for c in project.classes}
    rows = ranked(db, project, limit, version=version)
    return {
        "project_id": project.id,
        "model_version_id": version.id if version else None,
        # Ranked cells follow the current review queue first (models/review.py),
        # then this order.
        "order": "entropy" if version else "random",
        "review_queue_id": db.scalar(select(ReviewQueue.id).where(
            ReviewQueue.project_id == project.id, ReviewQueue.is_current)),
        "cells": [{
            "image_id": image.id,
            "suggestion": names.get(p.predicted_class_id) if p else None,
            "confidence": p.confidence if p else None,
            "entropy": p.entropy if p else None,
            "margin": p.margin if p else None,
        } for image, p in rows],
    }


@bp.get("/rounds/<int:round_id>")
@role_required(Role.ADMIN)
def round_status(round_id: int):
    rnd = get_or_404(TrainingRound, round_id, "round")
    require_project(get_db(), current_user, rnd.project_id)
    return _round_json(rnd)


@bp.get("/projects/<int:project_id>/agreement")
@role_required(Role.CURATOR)
def agreement(project_id: int):
    """Cohen's kappa per reader pair, Fleiss' kappa and Krippendorff's alpha, per class too."""
    from ..curate.agreement_report import agreement_report

    db = get_db()
    project = require_project(db, current_user, project_id)
    return {"project_id": project.id, **agreement_report(db, project).as_json()}


@bp.get("/cells/<int:image_id>/history")
@role_required(Role.CURATOR)
def cell_history(image_id: int):
    from models import Image

    from ..curate.history import event_json, timeline

    db = get_db()
    image = require_cell(db, current_user, Image, image_id)
    return {"image_id": image.id, "events": [event_json(e) for e in timeline(db, image)]}
