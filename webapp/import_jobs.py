"""Starting an import from an upload, and its report: one code path for the Admin
page (webapp/admin/imports.py) and API v1 (webapp/api/v1/imports.py).

The request's files are already on disk (webapp/uploads.py spools every part
to the instance's disk); ``start_import`` copies them in chunks into
``<instance>/uploads/job-<token>/`` (a zip as it is, other files under
``files/`` by their relative path), records an ``import_jobs`` row and sends
its id to the default queue (worker/imports.py imports it with the validator
``hemaloop import`` uses).
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path, PurePosixPath

from flask import current_app
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from models import ImportJob, ImportStatus, Project
from worker.celery_app import RUN_IMPORT

_UNSAFE = re.compile(r"[^\w .+()-]")


class UploadRefused(ValueError):
    """The upload cannot be imported as sent; the message says why (for the person)."""


class UploadNotStored(OSError):
    """The upload could not be written to the instance's disk; nothing was recorded."""


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


def start_import(db: Session, celery_app, settings, project: Project,
                 files: list[FileStorage], *, trust_labels: bool,
                 user_id: int | None) -> ImportJob:
    """Store the upload, record its job and queue it; the job (queued, or failed
    when the broker is down: its ``error`` says so).

    Raises UploadRefused (nothing chosen, two zips) or UploadNotStored (the
    disk); either way the upload's folder is gone and no row was written.
    """
    rel = Path("uploads") / f"job-{secrets.token_hex(8)}"
    folder = settings.instance_dir / rel
    try:
        source = save_upload(files, folder, {c.name.lower() for c in project.classes})
    except UploadRefused:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        current_app.logger.exception("could not store an upload for project %s", project.id)
        raise UploadNotStored("The upload could not be stored (is the disk full?); "
                              "nothing was imported.") from exc
    job = ImportJob(project_id=project.id, source=source[:200], upload_dir=rel.as_posix(),
                    trust_labels=trust_labels, created_by_id=user_id)
    db.add(job)
    db.commit()
    try:
        celery_app.send_task(RUN_IMPORT, args=[job.id])
    except Exception:  # noqa: BLE001 -- the broker is down: say so on the row
        current_app.logger.exception("could not enqueue import job %s", job.id)
        job.status, job.error = ImportStatus.FAILED, "It could not be queued; upload again."
        db.commit()
        shutil.rmtree(folder, ignore_errors=True)
    return job


def report_body(job: ImportJob) -> dict:
    """The finished job's report as the download and the API give it."""
    body = {"import_id": job.id, "project_id": job.project_id, "source": job.source,
            "status": job.status.value, "trust_labels": job.trust_labels,
            "imported": 0, "duplicates": 0, "labeled": 0, "rejected": [],
            **(job.report or {})}
    body["error"] = job.error
    return body
