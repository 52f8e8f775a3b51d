"""Imports (admins): upload a zip or many files into a project, follow the job,
read its report.  The Admin page's code path (webapp/import_jobs.py): the
upload is spooled to the instance's disk as it arrives (webapp/uploads.py),
copied in chunks into the job's folder, and imported on a worker with the
validator ``hemaloop import`` uses.
"""

from __future__ import annotations

from flask import current_app, url_for
from sqlalchemy import select

from models import ImportJob, Scope

from ...auth.access import require_cell, require_project
from ...db import get_db
from ...import_jobs import UploadNotStored, UploadRefused, report_body, start_import
from ...limits import accepts_upload
from ...queueing import celery
from . import bp
from .auth import acting_user, token_auth
from .errors import json_error
from .io_schemas import ImportIn, ImportList, ImportOut, ImportReportOut
from .schemas import PageQuery


def import_json(job: ImportJob) -> dict:
    finished = job.status.is_finished
    return {
        "id": job.id, "project_id": job.project_id, "status": job.status.value,
        "source": job.source, "trust_labels": job.trust_labels,
        "files_total": job.files_total, "files_done": job.files_done,
        "progress": 1.0 if finished and job.report else job.progress,
        "error": job.error, "created_at": job.created_at, "finished_at": job.finished_at,
        "imported": (job.report or {}).get("imported", 0) if finished else None,
        "report_url": url_for("api_v1.get_import_report", import_id=job.id) if finished else None,
    }


def _job(import_id: int) -> ImportJob:
    return require_cell(get_db(), acting_user(), ImportJob, import_id, noun="import")


# accepts_upload right under the route: the view it marks is the one registered.
@bp.post("/projects/<int:project_id>/imports")
@accepts_upload
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.input(ImportIn, location="form_and_files", arg_name="body")
@bp.output(ImportOut, status_code=202)
@bp.doc(tags=["imports"], operation_id="start_import", responses=[400, 404, 413, 507])
def create_import(project_id: int, body: dict):
    """Upload cells (multipart/form-data, field `files`, repeated) and queue their import.

    The answer comes once the upload is stored and queued (202); follow
    GET /imports/{id} until `status` is `succeeded` or `failed`, then read its
    report.  A second upload of the same cells imports none of them again: the
    report counts them as duplicates.
    """
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    try:
        job = start_import(db, celery(), current_app.config["HEMALOOP"], project, body["files"],
                           trust_labels=body["trust_labels"], user_id=user.id)
    except UploadRefused as exc:
        return json_error(400, "Upload refused", str(exc))
    except UploadNotStored as exc:
        return json_error(507, "Upload not stored", str(exc))
    return import_json(job)


@bp.get("/projects/<int:project_id>/imports")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.input(PageQuery, location="query", arg_name="q")
@bp.output(ImportList)
@bp.doc(tags=["imports"], operation_id="list_imports")
def list_imports(project_id: int, q: dict):
    """The project's imports, newest first."""
    db = get_db()
    project = require_project(db, acting_user(), project_id)
    stmt = (select(ImportJob).where(ImportJob.project_id == project.id)
            .order_by(ImportJob.id.desc()).limit(q["limit"] + 1))
    if q["cursor"]:
        stmt = stmt.where(ImportJob.id < q["cursor"])
    rows = list(db.scalars(stmt))
    more = len(rows) > q["limit"]
    rows = rows[: q["limit"]]
    return {"items": [import_json(j) for j in rows],
            "next_cursor": rows[-1].id if more else None}


@bp.get("/imports/<int:import_id>")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(ImportOut)
@bp.doc(tags=["imports"], operation_id="get_import")
def get_import(import_id: int):
    """An import's status and progress (files done of files total)."""
    return import_json(_job(import_id))


@bp.get("/imports/<int:import_id>/report")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(ImportReportOut)
@bp.doc(tags=["imports"], operation_id="get_import_report", responses=[404, 409])
def get_import_report(import_id: int):
    """What the import kept: imported, duplicates, labeled, and every rejected file
    by name with the reason; 409 while it is still queued or running."""
    job = _job(import_id)
    if not job.status.is_finished:
        return json_error(409, "Not finished",
                          f"Import {job.id} is {job.status.value}; its report comes when it ends.")
    return report_body(job)
