"""Imports from the browser: the upload streams to disk, a worker imports it.

POST a zip, or many files (a folder of class folders, through the browser's
folder picker): the files land in ``<instance>/uploads/job-<token>/`` (a zip
as it is, other files under ``files/`` by their relative path), an
``import_jobs`` row is queued and its id sent to the default queue
(worker/imports.py).  The job's page polls its row until it ends (htmx stops
on status 286) and then shows the report, also downloadable as JSON.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path, PurePosixPath

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import FileStorage

from models import ImportJob, ImportStatus, Project, Role
from worker.celery_app import RUN_IMPORT

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..limits import accepts_upload
from ..queueing import celery
from . import bp
from .people_forms import ImportForm
from .polling import polled

_UNSAFE = re.compile(r"[^\w .+()-]")


class UploadRefused(ValueError):
    """The upload cannot be imported as sent; the message says why."""


def _safe_parts(filename: str) -> list[str]:
    """A browser's relative path ("cells/basophil/x.jpg") as safe folder names:
    no climbing out, no hidden or empty parts, no odd characters."""
    parts = []
    for part in PurePosixPath(filename.replace("\\", "/")).parts:
        part = _UNSAFE.sub("_", part).strip()
        if part in ("", ".", "..") or part.startswith("."):
            continue
        parts.append(part[:200])
    return parts


def save_upload(files: list[FileStorage], folder: Path, class_names: set[str]) -> str:
    """Copy the request's (already spooled) files into ``folder``; returns what they
    were, for the page.  One zip, or image files; a shared top folder that is not
    a class name (the folder the admin picked) is dropped, so class folders are
    read as ``hemaloop import`` reads them."""
    files = [f for f in files if f.filename]
    if not files:
        raise UploadRefused("Choose a zip, some images or a folder to upload.")
    zips = [f for f in files if f.filename.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise UploadRefused("Upload one zip at a time, or image files without a zip.")
    folder.mkdir(parents=True)
    if zips:
        zips[0].save(folder / "upload.zip")  # copied in chunks from the spooled file
        return _safe_parts(zips[0].filename)[-1] if _safe_parts(zips[0].filename) else "upload.zip"
    paths = [_safe_parts(f.filename) for f in files]
    tops = {p[0] for p in paths if len(p) > 1}
    skip = int(len(tops) == 1 and all(len(p) > 1 for p in paths)
               and next(iter(tops)).lower() not in class_names)
    target = folder / "files"
    for storage, parts in zip(files, paths, strict=True):
        parts = parts[skip:] or ["unnamed"]
        dest = target.joinpath(*parts)
        if dest.exists():  # two parts with one name after cleaning: keep both
            dest = dest.with_name(f"{dest.stem}-{secrets.token_hex(3)}{dest.suffix}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        storage.save(dest)
    root = next(iter(tops)) if skip else None
    return f"{root}/ ({len(files)} files)" if root else f"{len(files)} file(s)"


@bp.post("/projects/<int:project_id>/imports")
@role_required(Role.ADMIN)
@accepts_upload
def upload(project_id: int):
    project = get_or_404(Project, project_id, "project")
    form = ImportForm()  # reads request.form: the files are parsed to disk here
    if not form.validate_on_submit():
        abort(400, description="The form expired; reload the page and upload again.")
    settings = current_app.config["HEMALOOP"]
    rel = Path("uploads") / f"job-{secrets.token_hex(8)}"
    folder = settings.instance_dir / rel
    try:
        source = save_upload(request.files.getlist("files"), folder,
                             {c.name.lower() for c in project.classes})
    except UploadRefused as exc:
        shutil.rmtree(folder, ignore_errors=True)
        flash(str(exc), "error")
        return redirect(url_for("admin.project_page", project_id=project.id))
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        current_app.logger.exception("could not store an upload for project %s", project.id)
        flash("The upload could not be stored (is the disk full?); nothing was imported.",
              "error")
        return redirect(url_for("admin.project_page", project_id=project.id))
    db = get_db()
    job = ImportJob(project_id=project.id, source=source[:200], upload_dir=rel.as_posix(),
                    trust_labels=bool(form.trust_labels.data), created_by_id=current_user.id)
    db.add(job)
    db.commit()
    try:
        celery().send_task(RUN_IMPORT, args=[job.id])
    except Exception:  # noqa: BLE001 -- the broker is down: say so on the row
        current_app.logger.exception("could not enqueue import job %s", job.id)
        job.status, job.error = ImportStatus.FAILED, "It could not be queued; upload again."
        db.commit()
        shutil.rmtree(folder, ignore_errors=True)
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
    body = {"import_id": job.id, "project_id": job.project_id, "source": job.source,
            "status": job.status.value, "trust_labels": job.trust_labels,
            **(job.report or {"imported": 0, "duplicates": 0, "rejected": []})}
    if job.error:
        body["error"] = job.error
    return Response(json.dumps(body, indent=1), mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="import-{job.id}-report.json"'})
