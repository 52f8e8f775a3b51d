"""A browser upload imported on a worker, recorded on its ``import_jobs`` row.

The upload waits on disk (the webapp streamed it there, webapp/admin/uploads.py);
this claims the row ``queued -> running`` atomically (a duplicate delivery does
nothing), imports with the same validator as ``hemaloop import``, writes the
progress at most once a second, and always ends ``succeeded`` or ``failed``
with the report of what was kept.  The upload folder is removed at the end.
"""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
from pathlib import Path

from sqlalchemy import update

from models import ImportJob, ImportStatus, Project, utcnow
from models.db import session_scope
from models.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 1.0


def upload_root(settings: Settings) -> Path:
    return settings.instance_dir / "uploads"


def import_source(folder: Path) -> tuple[Path, bool]:
    """What to import from an upload folder: its zip (labels from its folders), or
    the files folder (class folders as ``hemaloop import`` reads them)."""
    archives = sorted(folder.glob("*.zip"))
    if archives:
        return archives[0], True
    return folder / "files", False


def run_import_job(settings: Settings, job_id: int) -> str:
    from webapp.ingest import ImportAborted, import_path
    from webapp.ingest.sources import count_files

    with session_scope(settings.database_url) as s:
        claimed = s.execute(update(ImportJob).where(
            ImportJob.id == job_id, ImportJob.status == ImportStatus.QUEUED).values(
            status=ImportStatus.RUNNING)).rowcount
        if not claimed:
            return "not queued"
        job = s.get(ImportJob, job_id)
        folder = settings.instance_dir / job.upload_dir
        trust, project_id = job.trust_labels, job.project_id
    try:
        source, zip_labels = import_source(folder)
        if not source.exists():
            _set(settings, job_id, status=ImportStatus.FAILED, finished_at=utcnow(),
                 error="The uploaded files are no longer on the server (was the instance "
                       "folder cleaned?); nothing was imported. Upload them again.")
            return ImportStatus.FAILED.value
        try:
            total = count_files(source, zip_labels)
        except (zipfile.BadZipFile, FileNotFoundError):  # the latter: not a zip at all
            _set(settings, job_id, status=ImportStatus.FAILED, finished_at=utcnow(),
                 error="The zip is damaged or not a zip archive (its table of contents "
                       "cannot be read); nothing was imported.")
            return ImportStatus.FAILED.value
        _set(settings, job_id, files_total=total)
        done, last = [0], [time.monotonic()]

        def progress(n: int) -> None:
            done[0] += n
            if time.monotonic() - last[0] >= PROGRESS_EVERY_SECONDS:
                last[0] = time.monotonic()
                _set(settings, job_id, files_done=done[0])

        with session_scope(settings.database_url) as s:
            project = s.get(Project, project_id)
            # The admin's answer (the form starts from the project's setting)
            # applies to all of the project's reference labels, as the page says.
            project.train_on_reference = trust
            s.commit()
            try:
                report = import_path(s, settings.storage_dir, project, source,
                                     max_pixels=settings.max_image_pixels,
                                     source=_source_name(settings, job_id),
                                     progress=progress, zip_labels=zip_labels)
            except ImportAborted as exc:
                report = exc.report
        body = {**report.as_dict(), "labeled": report.labeled}
        status = ImportStatus.FAILED if report.aborted else ImportStatus.SUCCEEDED
        _set(settings, job_id, files_done=done[0], report=body, status=status,
             error=report.aborted, finished_at=utcnow())
        return status.value
    except Exception as exc:  # noqa: BLE001 -- the row must end; details go to the log
        log.exception("import job %s failed", job_id)
        if isinstance(exc, OSError) and getattr(exc, "errno", None) is not None:
            import os

            why = f"cannot read the upload: {os.strerror(exc.errno)}"
        else:
            why = f"Unexpected error in the worker ({type(exc).__name__})"
        _set(settings, job_id, status=ImportStatus.FAILED, error=why, finished_at=utcnow())
        return ImportStatus.FAILED.value
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _source_name(settings: Settings, job_id: int) -> str:
    with session_scope(settings.database_url) as s:
        return s.get(ImportJob, job_id).source


def _set(settings: Settings, job_id: int, **values) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))
