"""Cell measurements for the curators' panel, started from the project page.

A worker measures every cell that lacks a measurement (worker/describe.py);
imports queue a run by themselves, so the button is for cells imported
before measurements existed, a new descriptor version, or failed cells
after their files were restored.  The card polls its run until it ends.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select

from models import CellMeasurement, Image, Project, Role
from worker.describe_launch import DescribeBusy, create_run, enqueue_run, latest_run

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..queueing import celery
from . import bp
from .polling import polled


@bp.post("/projects/<int:project_id>/describe")
@role_required(Role.ADMIN)
def start_describe(project_id: int):
    project = get_or_404(Project, project_id, "project")
    db = get_db()
    stale = current_app.config["HEMALOOP"].round_stale_seconds
    try:
        run = create_run(db, project.id, trigger="admin", stale_seconds=stale,
                         user_id=current_user.id)
    except DescribeBusy as exc:
        flash(str(exc), "info")
    else:
        if enqueue_run(db, celery(), run):
            flash(f"Measuring run {run.id} queued: the cells without measurements are "
                  "measured on a worker.", "info")
        else:
            flash(f"Measuring run {run.id} could not be queued (is the broker running?).", "error")
    return redirect(url_for("admin.project_page", project_id=project.id) + "#measurements")


@bp.get("/projects/<int:project_id>/describe/status")
@role_required(Role.ADMIN)
def describe_status(project_id: int):
    project = get_or_404(Project, project_id, "project")
    db = get_db()
    run = latest_run(db, project.id)
    cells = db.scalar(select(func.count()).select_from(Image).where(Image.project_id == project.id))
    failed, rows = db.execute(select(func.count(CellMeasurement.error), func.count()).where(
        CellMeasurement.project_id == project.id)).one()
    html = render_template("admin/_describe_status.html", project=project, run=run, cells=cells,
                           measured=rows - failed, failed=failed)
    # 286 once no run is live: htmx stops polling (webapp/admin/polling.py).
    return polled(html, finished=run is None or run.status.is_finished)
