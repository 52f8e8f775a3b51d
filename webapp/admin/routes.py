from __future__ import annotations

from flask import abort, current_app, render_template
from flask_login import current_user
from sqlalchemy import select

from models import ModelVersion, Project, Role, TrainingRound
from worker.rounds import RoundRefused, fail_lost_rounds

from ..auth.roles import role_required
from ..db import get_db
from ..queueing import celery
from ..rounds import create_round, enqueue_round
from . import bp
from .overview import project_overview, recent_rounds


def _project(project_id: int) -> Project:
    project = get_db().get(Project, project_id)
    if project is None:
        abort(404, description=f"There is no project {project_id}.")
    return project


def _round(round_id: int) -> TrainingRound:
    rnd = get_db().get(TrainingRound, round_id)
    if rnd is None:
        abort(404, description=f"There is no round {round_id}.")
    return rnd


@bp.get("/")
@role_required(Role.ADMIN)
def index():
    # A round whose worker vanished is failed here too, not only at worker start.
    fail_lost_rounds(current_app.config["HEMALOOP"])
    db = get_db()
    projects = db.scalars(select(Project).order_by(Project.name)).all()
    return render_template("admin/index.html",
                           overviews=[project_overview(db, p) for p in projects])


@bp.post("/projects/<int:project_id>/rounds")
@role_required(Role.ADMIN)
def start_round(project_id: int):
    db = get_db()
    project = _project(project_id)
    try:
        rnd = create_round(db, project, trigger="admin", user=current_user)
    except RoundRefused as exc:
        return render_template("_error.html", title="Round not started", message=str(exc)), 409
    enqueue_round(db, celery(), rnd)
    return render_template("admin/_rounds.html", project=project,
                           rounds=recent_rounds(db, project.id))


@bp.get("/rounds/<int:round_id>/row")
@role_required(Role.ADMIN)
def round_row(round_id: int):
    rnd = _round(round_id)
    if not rnd.status.is_finished:
        fail_lost_rounds(current_app.config["HEMALOOP"])
        get_db().refresh(rnd)
    return render_template("admin/_round_row.html", rnd=rnd)


@bp.get("/rounds/<int:round_id>")
@role_required(Role.ADMIN)
def round_detail(round_id: int):
    db = get_db()
    rnd = _round(round_id)
    version = db.scalar(select(ModelVersion).where(ModelVersion.round_id == rnd.id))
    return render_template("admin/round.html", rnd=rnd, version=version,
                           project=db.get(Project, rnd.project_id))
