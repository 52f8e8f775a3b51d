"""Import cell images into a project: validate, deduplicate, store, record.

A bad file never stops an import: it is listed by name with its reason and
the rest proceeds; that includes files that cannot even be read (a zip member
with a bad CRC, an encrypted or deflate64 member, a file without read
permission, a FIFO).  Rows are committed in batches, so an interrupted import
keeps what it stored and a re-run skips those files as duplicates.

Storage never keeps a file without a row: files are written before their
batch commits, and if the batch does not commit (a database error, a full
disk, Ctrl-C, SIGTERM from the CLI) the batch is rolled back and the files it
created are deleted again, unless a committed row (another project's import of
the same content) now points at them.  Only a SIGKILL between writing a file
and committing its batch can leave one behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Annotation, Image, Origin, Project, Split

from .sources import (
    MAX_FILE_BYTES,
    SourceFile,
    UnreadableFile,
    iter_source,
    read_capped,
)
from .store import is_stored, relative_path, sha256_of, write_atomic
from .validate import RejectedImage, decode

log = logging.getLogger(__name__)

COMMIT_EVERY = 200


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    labeled: int = 0
    # Bytes pulled out of files and archive members: bounded by the size cap
    # plus one read chunk per refused file, whatever a member claims to hold.
    bytes_read: int = 0
    aborted: str | None = None  # set when the import stopped early, for the user

    def as_dict(self) -> dict:
        out = {"imported": self.imported, "duplicates": self.duplicates,
               "rejected": self.rejected}
        if self.aborted is not None:
            out["aborted"] = self.aborted
        return out


class ImportAborted(Exception):
    """The import stopped early; ``report`` holds what was committed before."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(report.aborted)
        self.report = report


def _unit(sha: str, offset: int) -> float:
    """A uniform number in [0, 1) taken from the content hash: fixed per image."""
    return int(sha[offset:offset + 8], 16) / 2**32


def assign_split(sha: str, test_share: float) -> Split:
    return Split.TEST if _unit(sha, 8) < test_share else Split.POOL


def import_path(
    session: Session,
    storage_dir: Path,
    project: Project,
    path: Path,
    *,
    max_pixels: int,
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    zip_labels: bool = False,
) -> ImportReport:
    """Import every file under ``path`` into ``project``; returns the report.

    Raises ImportAborted (with the report of what was kept) if the import
    cannot go on: the database or the store failed, not a file.
    """
    run = _Run(session, storage_dir, project, source or path.name, max_pixels, max_file_bytes)
    try:
        for item in iter_source(path, zip_labels, {c.name for c in project.classes}):
            if progress:
                progress(1)
            reason = run.add(item)
            if reason is not None:
                run.report.rejected.append({"file": item.name, "reason": reason})
            if run.batch_imported >= COMMIT_EVERY:
                run.commit()
        run.commit()
    except BaseException as exc:
        run.roll_back()
        if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: cleaned up, go on stopping
            raise
        if isinstance(exc, OSError) and exc.errno is not None:
            # The store's own failure (disk full, read-only): the system's words are safe.
            why = f"cannot write to storage: {os.strerror(exc.errno)}"
        else:
            log.exception("import of %s into project %s stopped", path, project.id)
            why = f"an internal error ({type(exc).__name__}); details are in the server log"
        report = run.report
        report.aborted = (f"the import stopped early: {why}. The {report.imported} image(s) "
                          "reported as imported are kept; run the import again to continue "
                          "(they are skipped as duplicates).")
        raise ImportAborted(report) from exc
    return run.report


class _Run:
    """One import in progress: its report and its batch not yet committed."""

    def __init__(self, session: Session, storage_dir: Path, project: Project, source: str,
                 max_pixels: int, max_file_bytes: int) -> None:
        self.session, self.storage_dir, self.project = session, storage_dir, project
        self.source, self.max_pixels, self.max_file_bytes = source, max_pixels, max_file_bytes
        self.report = ImportReport()
        self.classes = {c.name.lower(): c for c in project.classes}
        self.known = set(session.scalars(
            select(Image.sha256).where(Image.project_id == project.id)))
        self.bytes_read = [0]  # read_capped's counter
        # The uncommitted batch: files this import created, and its counts.
        self.batch_files: list[str] = []
        self.batch_imported = self.batch_labeled = 0

    def add(self, item: SourceFile) -> str | None:
        """Import one source file; returns the reason it is rejected, or None."""
        try:
            return self._add(item)
        finally:
            self.report.bytes_read = self.bytes_read[0]

    def _add(self, item: SourceFile) -> str | None:
        if item.problem is not None:
            return item.problem
        label_class = None
        if item.label is not None:
            label_class = self.classes.get(item.label.lower())
            if label_class is None:
                return (f"unknown class '{item.label}' (this project's classes: "
                        f"{', '.join(c.name for c in self.project.classes)})")
        if item.size > self.max_file_bytes:
            return f"file too large ({item.size:,} bytes; the limit is {self.max_file_bytes:,})"
        try:
            data = read_capped(item, self.max_file_bytes, self.bytes_read)
        except UnreadableFile as exc:
            return str(exc)
        sha = sha256_of(data)
        if sha in self.known:
            self.report.duplicates += 1
            return None
        try:
            decoded = decode(data, self.max_pixels)
        except RejectedImage as exc:
            return str(exc)
        del data  # the stored form may be a converted copy: keep one in memory
        rel = relative_path(sha, decoded.extension)
        if not is_stored(self.storage_dir, rel):
            # Listed before it is written: a Ctrl-C or SIGTERM landing anywhere in
            # the write (even after the file is in place, before the call returns)
            # still finds it in the batch, and roll_back removes it.
            self.batch_files.append(rel)
            write_atomic(self.storage_dir, rel, decoded.data)
        image = Image(
            project_id=self.project.id, sha256=sha, storage_path=rel, width=decoded.width,
            height=decoded.height, original_name=item.name[:500], source=self.source[:200],
            split=assign_split(sha, self.project.test_share), shuffle_key=_unit(sha, 16),
        )
        self.session.add(image)
        if label_class is not None:
            self.session.flush()
            self.session.add(Annotation(image_id=image.id, origin=Origin.REFERENCE,
                                        source=self.source[:200],
                                        label_class_id=label_class.id))
            self.report.labeled += 1
            self.batch_labeled += 1
        self.known.add(sha)
        self.report.imported += 1
        self.batch_imported += 1
        return None

    def commit(self) -> None:
        self.session.commit()
        self.batch_files.clear()
        self.batch_imported = self.batch_labeled = 0

    def roll_back(self) -> None:
        """Undo the uncommitted batch: its rows, its counts, the files it put in storage."""
        self.report.imported -= self.batch_imported
        self.report.labeled -= self.batch_labeled
        session = self.session
        try:
            session.rollback()
        except Exception:
            log.warning("rollback failed while stopping an import", exc_info=True)
        if not self.batch_files:
            return
        try:
            # Another project may have committed a row for the same content meanwhile.
            referenced = set(session.scalars(
                select(Image.storage_path).where(Image.storage_path.in_(self.batch_files))))
            session.rollback()
        except Exception:  # noqa: BLE001 -- database down: no committed row can name them
            referenced = set()
        for rel in self.batch_files:
            if rel in referenced:
                continue
            try:
                (self.storage_dir / rel).unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass  # listed, then the write failed or never began: nothing to remove
            except OSError:
                log.warning("could not remove %s while stopping an import", rel, exc_info=True)
