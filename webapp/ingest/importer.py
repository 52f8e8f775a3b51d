"""Import cell images into a project: validate, deduplicate, store, record.

A bad file never stops an import: it is listed by name with its reason and
the rest proceeds.  Rows are committed in batches, so an interrupted import
keeps what it stored and a re-run skips those files as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Annotation, Image, Origin, Project, Split

from .sources import MAX_FILE_BYTES, iter_source
from .store import relative_path, sha256_of, write_atomic
from .validate import RejectedImage, decode

COMMIT_EVERY = 200


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    labeled: int = 0

    def as_dict(self) -> dict:
        return {"imported": self.imported, "duplicates": self.duplicates,
                "rejected": self.rejected}


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
) -> ImportReport:
    """Import every file under ``path`` into ``project``; returns the report."""
    source = source or path.name
    report = ImportReport()
    classes = {c.name.lower(): c for c in project.classes}
    known = set(session.scalars(select(Image.sha256).where(Image.project_id == project.id)))
    pending = 0
    for item in iter_source(path):
        if progress:
            progress(1)
        label_class = None
        if item.label is not None:
            label_class = classes.get(item.label.lower())
            if label_class is None:
                report.rejected.append({"file": item.name, "reason": (
                    f"unknown class '{item.label}' (this project's classes: "
                    f"{', '.join(c.name for c in project.classes)})")})
                continue
        if item.size > MAX_FILE_BYTES:
            report.rejected.append({"file": item.name,
                                    "reason": f"file too large ({item.size:,} bytes)"})
            continue
        data = item.read()
        sha = sha256_of(data)
        if sha in known:
            report.duplicates += 1
            continue
        try:
            decoded = decode(data, max_pixels)
        except RejectedImage as exc:
            report.rejected.append({"file": item.name, "reason": str(exc)})
            continue
        rel = relative_path(sha, decoded.extension)
        write_atomic(storage_dir, rel, data)
        image = Image(
            project_id=project.id, sha256=sha, storage_path=rel, width=decoded.width,
            height=decoded.height, original_name=item.name[:500], source=source[:200],
            split=assign_split(sha, project.test_share), shuffle_key=_unit(sha, 16),
        )
        session.add(image)
        if label_class is not None:
            session.flush()
            session.add(Annotation(image_id=image.id, origin=Origin.REFERENCE,
                                   source=source[:200], label_class_id=label_class.id))
            report.labeled += 1
        known.add(sha)
        report.imported += 1
        pending += 1
        if pending >= COMMIT_EVERY:
            session.commit()
            pending = 0
    session.commit()
    return report
