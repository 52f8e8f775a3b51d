from __future__ import annotations

import uuid

from flask import abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import Annotation, Flag, Image, Origin, Prediction, Project, Role, User
from models.labels import cell_states

from ..auth.access import require_cell, require_project, visible_projects
from ..auth.roles import role_required
from ..db import get_db
from ..label.queue import active_version
from . import bp
from .agreement_report import agreement_report
from .history import timeline
from .plots import heatmap, kappa_bars
from .similar import nearest_by_class
from .worklist import curation_items

MAX_NOTE = 2000


def _image(image_id: int) -> Image:
    return require_cell(get_db(), current_user, Image, image_id)


@bp.get("/")
@role_required(Role.CURATOR)
def index():
    """Every project's cells waiting for a curator."""
    db = get_db()
    projects = db.scalars(visible_projects(db, current_user).order_by(Project.name)).all()
    return render_template("curate/index.html",
                           worklists=[(p, curation_items(db, p)) for p in projects])


@bp.get("/cells/<int:image_id>")
@role_required(Role.CURATOR)
def cell(image_id: int):
    db = get_db()
    image = _image(image_id)
    project = db.get(Project, image.project_id)
    states = cell_states(db, project)
    state = states[image.id]
    names = {c.id: c for c in project.classes}
    users = dict(db.execute(select(User.id, User.username)
                            .where(User.id.in_(list(state.votes) or [-1]))).all())
    version = active_version(db, project.id)
    prediction = db.scalar(select(Prediction).where(
        Prediction.image_id == image.id, Prediction.model_version_id == version.id)) if version else None
    probabilities = sorted(((names[int(k)], v) for k, v in (prediction.probabilities or {}).items()
                            if int(k) in names), key=lambda kv: -kv[1]) if prediction else []
    candidates = list(dict.fromkeys(state.voted_classes + [c.id for c, _ in probabilities[:2]]))
    similar = nearest_by_class(current_app.config["HEMALOOP"].storage_dir, version, image.id,
                               candidates, states)
    return render_template("curate/cell.html", image=image, project=project, state=state,
                           users=users, classes=names, probabilities=probabilities,
                           version=version, similar=similar, candidates=candidates,
                           submission_id=uuid.uuid4().hex)


@bp.post("/cells/<int:image_id>/resolve")
@role_required(Role.CURATOR)
def resolve(image_id: int):
    """The final word: a class or excluded, with an optional note, appended to the history."""
    db = get_db()
    image = _image(image_id)
    project = db.get(Project, image.project_id)
    choice = (request.form.get("choice") or "").strip()
    note = (request.form.get("note") or "").strip() or None
    submission = (request.form.get("submission_id") or "").strip()[:64] or None
    label_class = project.class_by_name(choice)
    if label_class is None and choice != Flag.EXCLUDED.value:
        names = ", ".join(c.name for c in project.classes)
        abort(400, description=f"Unknown class {choice!r}; choose one of {names}, or excluded.")
    if note is not None and len(note) > MAX_NOTE:
        abort(400, description=f"The note is longer than {MAX_NOTE} characters.")
    if submission and db.scalar(select(Annotation.id).where(
            Annotation.user_id == current_user.id, Annotation.submission_id == submission)):
        return redirect(_next_url(project))  # a double click: recorded once
    db.add(Annotation(image_id=image.id, user_id=current_user.id, origin=Origin.CURATOR,
                      label_class_id=label_class.id if label_class else None,
                      flag=None if label_class else Flag.EXCLUDED, note=note,
                      submission_id=submission))
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
    return redirect(_next_url(project))


def _next_url(project: Project) -> str:
    items = curation_items(get_db(), project)
    if items:
        return url_for("curate.cell", image_id=items[0].cell.image_id)
    return url_for("curate.index")


@bp.get("/cells/<int:image_id>/history")
@role_required(Role.CURATOR)
def history(image_id: int):
    image = _image(image_id)
    return render_template("curate/history.html", image=image, events=timeline(get_db(), image))


@bp.get("/projects/<int:project_id>/agreement")
@role_required(Role.CURATOR)
def agreement(project_id: int):
    db = get_db()
    project = require_project(db, current_user, project_id)
    report = agreement_report(db, project)
    squares, side = heatmap(report.confusion)
    bars = kappa_bars([(" vs ".join(p["readers"]), p["cohen_kappa"]) for p in report.pairs]
                      + [(f"class {c}", v["krippendorff_alpha"]) for c, v in report.per_class.items()])
    return render_template("curate/agreement.html", project=project, report=report,
                           squares=squares, side=side, bars=bars)
