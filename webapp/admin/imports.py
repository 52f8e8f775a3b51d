"""Imports from the browser: the upload streams to disk, a worker imports it.

POST a zip, or many files (a folder of class folders, through the browser's
folder picker): ``webapp.import_jobs.start_import`` (shared with API v1) stores
them, records an ``import_jobs`` row and queues it (worker/imports.py).  The
job's page polls its row until it ends (htmx stops on status 286) and then
shows the report, also downloadable as JSON.
"""

from __future__ import annotations

import json

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from models import ImportJob, Project, Role

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..import_jobs import UploadNotStored, UploadRefused, report_body, start_import
from ..limits import accepts_upload
from ..queueing import celery
from . import bp
from .people_forms import ImportForm
from .polling import polled


@bp.post("/projects/<int:project_id>/imports")
@role_required(Role.ADMIN)
@accepts_upload
def upload(project_id: int):
    project = get_or_404(Project, project_id, "project")
    form = ImportForm()  # reads request.form: the files are parsed to disk here
    if not form.validate_on_submit():
        abort(400, description="The form expired; reload the page and upload again.")
    try:
        job = start_import(get_db(), celery(), current_app.config["HEMALOOP"], project,
                           request.files.getlist("files"),
                           trust_labels=bool(form.trust_labels.data), user_id=current_user.id)
    except (UploadRefused, UploadNotStored) as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.project_page", project_id=project.id))
    return redirect(url_for("admin.import_job", job_id=job.id))


def _job(job_id: int) -> ImportJob:
    return get_or_404(ImportJob, job_id, "import")


@bp.get("/imports/<int:job_id>")
@role_required(Role.ADMIN)
def import_job(job_id: int):
    job = _job(job_id)
    return render_template("admin/import.html", job=job,
                           project=get_db().get(Project, job.project_id))


@bp.get("/imports/<int:job_id>/status")
@role_required(Role.ADMIN)
def import_status(job_id: int):
    job = _job(job_id)
    html = render_template("admin/_import_status.html", job=job)
    # 286 once the job has ended: htmx stops polling (webapp/admin/polling.py).
    return polled(html, finished=job.status.is_finished)


@bp.get("/imports/<int:job_id>/report.json")
@role_required(Role.ADMIN)
def import_report(job_id: int):
    job = _job(job_id)
    if not job.status.is_finished:
        abort(409, description="The import is still running; its report comes when it ends.")
    body = report_body(job)
    return Response(json.dumps(body, indent=1), mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="import-{job.id}-report.json"'})
