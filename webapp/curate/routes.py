from __future__ import annotations

import uuid

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from models import Annotation, Flag, Image, Kind, Origin, Prediction, Project, Role, User
from models.labels import cell_states

from ..auth.access import require_cell, require_project, visible_projects
from ..auth.roles import role_required
from ..db import get_db
from ..label.queue import active_version
from . import bp
from .agreement_report import agreement_report
from .history import timeline
from .measurements import panel, panel_classes
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
    worklists = [(p, curation_items(db, p)) for p in projects]
    voters = {u for _, items in worklists for item in items
              for u in (*item.cell.votes, *item.cell.rejected)}
    return render_template("curate/index.html", worklists=worklists, users=_usernames(voters),
                           classes={c.id: c for p in projects for c in p.classes},
                           resolved=_resolved_notice())


def _usernames(user_ids) -> dict[int, str]:
    ids = list(user_ids) or [-1]
    return dict(get_db().execute(select(User.id, User.username).where(User.id.in_(ids))).all())


_UNDONE = aliased(Annotation, name="undone")


def _live_resolution(annotation_id: int) -> Annotation | None:
    """The current curator's resolution ``annotation_id``, unless it was undone."""
    return get_db().scalar(select(Annotation).where(
        Annotation.id == annotation_id, Annotation.user_id == current_user.id,
        Annotation.origin == Origin.CURATOR, Annotation.kind != Kind.RETRACT,
        ~exists().where(_UNDONE.retracts_id == Annotation.id)))


def _resolved_notice() -> dict | None:
    """The resolution just made (``?resolved=<annotation id>``), offered for undo."""
    try:
        annotation_id = int(request.args.get("resolved", ""))
    except ValueError:
        return None
    row = _live_resolution(annotation_id)
    if row is None:
        return None
    project = get_db().get(Project, get_db().get(Image, row.image_id).project_id)
    what = next((c.name for c in project.classes if c.id == row.label_class_id), "excluded")
    return {"id": row.id, "image_id": row.image_id, "what": what}


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
    similar = nearest_by_class(current_app.config["HEMALOOP"].storage_dir, project, version,
                               image.id, candidates, states)
    # n/p walk the worklist; a cell no longer in it (just resolved) goes to its head.
    worklist = [item.cell.image_id for item in curation_items(db, project, states)]
    at = worklist.index(image.id) if image.id in worklist else None
    later = [i for i in worklist if i > image.id]
    earlier = [i for i in worklist if i < image.id]
    next_id = worklist[at + 1] if at is not None and at + 1 < len(worklist) else (
        later[0] if at is None and later else None)
    prev_id = worklist[at - 1] if at else (earlier[-1] if at is None and earlier else None)
    users.update(_usernames(state.rejected))
    # Rendered in the page from the states it has (a separate request would work
    # them out again: most of the fragment's cost on a large project).
    measured = panel(db, project, image.id, states, [c for c in panel_classes(
        project, state, [c.id for c, _ in probabilities]) if c in names])
    return render_template("curate/cell.html", image=image, project=project, state=state,
                           panel=measured, votes=set(state.voted_classes),
                           users=users, classes=names, probabilities=probabilities,
                           version=version, similar=similar, candidates=candidates,
                           submission_id=uuid.uuid4().hex, next_id=next_id, prev_id=prev_id,
                           position=(at + 1) if at is not None else None, total=len(worklist),
                           resolved=_resolved_notice())


@bp.get("/cells/<int:image_id>/measurements")
@role_required(Role.CURATOR)
def measurements(image_id: int):
    """The measurements panel (htmx fragment): values and the voted classes' ranges."""
    db = get_db()
    image = _image(image_id)
    project = db.get(Project, image.project_id)
    states = cell_states(db, project)
    version = active_version(db, project.id)
    prediction = db.scalar(select(Prediction).where(
        Prediction.image_id == image.id, Prediction.model_version_id == version.id)) if version else None
    predicted = [int(k) for k, _ in sorted((prediction.probabilities or {}).items(),
                                           key=lambda kv: -kv[1])] if prediction else []
    names = {c.id: c for c in project.classes}
    class_ids = [c for c in panel_classes(project, states[image.id], predicted) if c in names]
    return render_template("curate/_measurements.html", image=image, project=project,
                           panel=panel(db, project, image.id, states, class_ids), classes=names,
                           votes=set(states[image.id].voted_classes))


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
    earlier = db.scalar(select(Annotation.id).where(
        Annotation.user_id == current_user.id, Annotation.submission_id == submission)
    ) if submission else None
    if earlier is not None:
        return redirect(_next_url(project, earlier))  # a double click: recorded once
    row = Annotation(image_id=image.id, user_id=current_user.id, origin=Origin.CURATOR,
                     label_class_id=label_class.id if label_class else None,
                     flag=None if label_class else Flag.EXCLUDED, note=note,
                     submission_id=submission)
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        return redirect(_next_url(project, None))
    return redirect(_next_url(project, row.id))


@bp.post("/cells/<int:image_id>/undo")
@role_required(Role.CURATOR)
def undo_resolution(image_id: int):
    """Take back a resolution of this curator's: the cell goes back to where it was."""
    db = get_db()
    image = _image(image_id)
    try:
        row = _live_resolution(int(request.form.get("annotation_id", "")))
    except ValueError:
        abort(400, description="annotation_id must be a whole number.")
    if row is None or row.image_id != image.id:
        abort(409, description="Nothing to undo: that resolution is not yours, "
                               "or it was undone already.")
    db.add(Annotation(kind=Kind.RETRACT, image_id=image.id, user_id=current_user.id,
                      origin=Origin.CURATOR, retracts_id=row.id, submission_id=f"undo-{row.id}"))
    try:
        db.commit()
    except IntegrityError:
        db.rollback()  # the same undo, raced: done once
    flash(f"Undid the resolution of cell {image.id}: it is back in the worklist.", "info")
    return redirect(url_for("curate.cell", image_id=image.id))


def _next_url(project: Project, resolved_id: int | None) -> str:
    items = curation_items(get_db(), project)
    args = {"resolved": resolved_id} if resolved_id is not None else {}
    if items:
        return url_for("curate.cell", image_id=items[0].cell.image_id, **args)
    return url_for("curate.index", **args)


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
    # Two charts, not one: a pair's kappa and a class's alpha are different measures.
    pair_bars = kappa_bars([(" vs ".join(p["readers"]), p["cohen_kappa"]) for p in report.pairs])
    class_bars = kappa_bars([(c, v["krippendorff_alpha"]) for c, v in report.per_class.items()])
    return render_template("curate/agreement.html", project=project, report=report,
                           squares=squares, side=side, pair_bars=pair_bars, class_bars=class_bars)
