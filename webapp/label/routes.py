from __future__ import annotations

import uuid

from flask import abort, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import func, select

from models import Annotation, Origin, Project, Role

from ..auth.roles import role_required
from ..db import get_db
from . import bp
from .decisions import DecisionError, parse, record
from .queue import next_cell, remaining

SKIP_MEMORY = 500  # cells remembered as skipped per project in the session


def _project(project_id: int) -> Project:
    project = get_db().get(Project, project_id)
    if project is None:
        abort(404, description=f"There is no project {project_id}.")
    return project


def _skipped(project_id: int) -> list[int]:
    return session.get("skipped", {}).get(str(project_id), [])


def _cell_context(project: Project) -> dict:
    db = get_db()
    done = db.scalar(select(func.count(Annotation.id)).where(
        Annotation.user_id == current_user.id, Annotation.origin == Origin.READER)) or 0
    return dict(project=project, cell=next_cell(db, project, _skipped(project.id)),
                remaining=remaining(db, project.id), done=done,
                # A fresh id per cell shown: a repeated submission of it is recognised.
                submission_id=uuid.uuid4().hex)


def _cell_fragment(project: Project):
    return render_template("label/_cell.html", **_cell_context(project))


@bp.get("/")
@role_required(Role.PATHOLOGIST)
def index():
    projects = get_db().scalars(select(Project).order_by(Project.name)).all()
    if len(projects) == 1:
        return redirect(url_for("label.page", project_id=projects[0].id))
    return render_template("label/index.html", projects=projects)


@bp.get("/<int:project_id>")
@role_required(Role.PATHOLOGIST)
def page(project_id: int):
    return render_template("label/page.html", **_cell_context(_project(project_id)))


@bp.get("/<int:project_id>/next")
@role_required(Role.PATHOLOGIST)
def next_(project_id: int):
    return _cell_fragment(_project(project_id))


@bp.post("/<int:project_id>/cells/<int:image_id>")
@role_required(Role.PATHOLOGIST)
def decide(project_id: int, image_id: int):
    project = _project(project_id)
    try:
        record(get_db(), project, image_id, current_user, parse(request.form))
    except DecisionError as exc:
        return render_template("_error.html", title="Not saved", message=str(exc)), exc.status
    return _cell_fragment(project)


@bp.post("/<int:project_id>/cells/<int:image_id>/skip")
@role_required(Role.PATHOLOGIST)
def skip(project_id: int, image_id: int):
    project = _project(project_id)
    skipped = session.setdefault("skipped", {})
    ids = [i for i in skipped.get(str(project_id), []) if i != image_id] + [image_id]
    skipped[str(project_id)] = ids[-SKIP_MEMORY:]
    session.modified = True
    return _cell_fragment(project)
