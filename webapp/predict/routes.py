"""Predict pages: every role, on the projects it may see; adding a cell: admins.

Adding an uploaded cell to a project is an import (webapp/ingest, the same
validation, deduplication and split), and imports are the admin's (Admin ›
project › Upload), so only admins add here too.  Everyone else sees the
predictions and keeps their upload to themselves: a batch belongs to the user
who sent it, and anyone else gets 404 for its files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import current_user
from werkzeug.utils import secure_filename
from sqlalchemy import select

from models import Image, Project, Role
from worker.predict_spool import (SpoolError, batch_folder, heatmap_name, read_manifest,
                                  spooled_file, write_manifest)

from ..auth.access import require_project, visible_projects
from ..auth.roles import role_required
from ..db import get_db
from ..ingest import ImportAborted, import_path
from ..ingest.store import sha256_of
from ..limits import accepts_upload
from . import service
from .client import PredictFailed, PredictUnavailable
from .uploads import NothingToPredict, display_name

bp = Blueprint("predict", __name__, url_prefix="/predict")


def _settings():
    return current_app.config["HEMALOOP"]


@bp.get("/")
@role_required(Role.PATHOLOGIST)
def index():
    db = get_db()
    projects = db.scalars(visible_projects(db, current_user).order_by(Project.name)).all()
    return render_template("predict/index.html", projects=projects)


@bp.get("/<int:project_id>")
@role_required(Role.PATHOLOGIST)
def page(project_id: int):
    db = get_db()
    project = require_project(db, current_user, project_id)
    return render_template("predict/page.html", project=project,
                           versions=service.versions_of(db, project), spooled=None)


def _version_arg(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:  # "²".isdigit() too
        abort(400, description=f"'{raw[:20]}' is not a model version number.")
    return int(raw)


@bp.post("/<int:project_id>")
@role_required(Role.PATHOLOGIST)
@accepts_upload
def predict(project_id: int):
    db = get_db()
    project = require_project(db, current_user, project_id)
    version_id = _version_arg(request.form.get("version"))
    try:
        spooled, version = service.run(_settings(), db, project, current_user,
                                       request.files.getlist("files"), version_id)
    except service.PredictRefused as exc:
        abort(exc.status, description=str(exc))
    except NothingToPredict as exc:
        abort(400, description=str(exc))
    except PredictUnavailable as exc:
        abort(503, description=str(exc))
    except PredictFailed as exc:
        abort(502, description=str(exc))
    context = dict(project=project, spooled=spooled.manifest, batch=spooled.batch,
                   version=version, may_add=current_user.has_role(Role.ADMIN))
    if request.headers.get("HX-Request"):
        return render_template("predict/_results.html", **context)
    return render_template("predict/page.html", versions=service.versions_of(db, project),
                           **context)


def _own_batch(project: Project, batch: str) -> dict:
    """The batch's manifest, if it is this user's upload to this project (else 404)."""
    try:
        manifest = read_manifest(_settings().instance_dir, batch)
    except SpoolError:
        abort(404, description="That upload is gone (uploads are kept for a day).")
    if manifest.get("project_id") != project.id or manifest.get("user_id") != current_user.id:
        abort(404, description="That upload is gone (uploads are kept for a day).")
    return manifest


@bp.get("/<int:project_id>/uploads/<batch>/<name>")
@role_required(Role.PATHOLOGIST)
def spool_file(project_id: int, batch: str, name: str):
    """An uploaded cell or its heatmap, for the results on the page."""
    project = require_project(get_db(), current_user, project_id)
    manifest = _own_batch(project, batch)
    allowed = {e["stored"] for e in manifest["entries"] if e.get("stored")}
    allowed |= {heatmap_name(s) for s in allowed}
    if name not in allowed:
        abort(404, description="There is no such file in that upload.")
    folder = batch_folder(_settings().instance_dir, batch)
    path = folder / name
    heatmap_of = next((e for e in manifest["entries"] if e.get("heatmap") == name), None)
    if heatmap_of is not None:
        path = service.heatmap_file(folder, heatmap_of)
    if path is None or not path.is_file():  # no map (a model without pixels), or gone
        abort(404, description="There is no such file in that upload.")
    response = send_file(path, max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/<int:project_id>/add")
@role_required(Role.ADMIN)
def add(project_id: int):
    """Import one uploaded cell into the project (unlabeled, like any import)."""
    db = get_db()
    project = require_project(db, current_user, project_id)
    batch = request.form.get("batch", "")
    manifest = _own_batch(project, batch)
    raw = request.form.get("index", "")
    entries = manifest["entries"]
    if (not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or int(raw) >= len(entries)
            or not entries[int(raw)].get("stored")):
        abort(400, description="Choose an uploaded image that was accepted.")
    entry = entries[int(raw)]
    settings = _settings()
    source = spooled_file(settings.instance_dir, batch, entry["stored"])
    with tempfile.TemporaryDirectory(dir=source.parent, prefix=".add-") as tmp:
        # The file under its uploaded name, so the cell keeps it, made safe for the
        # file system: no NUL or separators, not hidden (an import skips hidden
        # files), and short in bytes, not only in characters.
        stem = secure_filename(Path(display_name(entry["name"])).stem).lstrip(".")
        stem = stem.encode()[:100].decode(errors="ignore") or f"upload-{int(raw) + 1}"
        name = stem + source.suffix
        shutil.copy(source, Path(tmp) / name)
        try:
            report = import_path(db, settings.storage_dir, project, Path(tmp),
                                 max_pixels=settings.max_image_pixels, source="predict upload")
        except ImportAborted as exc:
            abort(503, description=exc.report.aborted)
    if report.rejected:
        abort(400, description=f"{entry['name']} was not added: {report.rejected[0]['reason']}.")
    sha = sha256_of(source.read_bytes())
    image_id = db.scalar(select(Image.id).where(Image.project_id == project.id,
                                                Image.sha256 == sha))
    if image_id is None:  # nothing imported and nothing matched: say so, never "cell None"
        abort(400, description=f"{entry['name']} was not added: the import did not take it.")
    entry["added_image_id"] = image_id
    write_manifest(source.parent, manifest)
    return render_template("predict/_added.html", entry=entry, image_id=image_id,
                           duplicate=report.duplicates > 0, project=project)
