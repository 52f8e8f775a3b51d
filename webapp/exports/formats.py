"""One entry point for every export format, shared by the page, the CLI and the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from models import Project

from .agreement import agreement_csv
from .filters import ExportError, Filters
from .folders import folders_zip
from .labels import Progress, labels_csv, labels_jsonl
from .model_package import model_package_zip, package_version


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    mimetype: str
    suffix: str
    filtered: bool  # whether state/class/since apply


FORMATS = {f.name: f for f in [
    Format("csv", "Labels (CSV)", "text/csv; charset=utf-8", "labels.csv", True),
    Format("jsonl", "Labels (JSON Lines)", "application/x-ndjson; charset=utf-8",
           "labels.jsonl", True),
    Format("folders", "Class folders (zip: train/ and test/)", "application/zip",
           "folders.zip", True),
    Format("model", "Model package (zip)", "application/zip", "model.zip", False),
    Format("agreement", "Agreement report (CSV)", "text/csv; charset=utf-8", "agreement.csv",
           False),
]}


@dataclass
class Export:
    format: Format
    filename: str
    chunks: Iterator[bytes]


def download_name(project: Project, fmt: Format, version_id: int | None = None) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", project.name).strip("._") or f"project{project.id}"
    if fmt.name == "model" and version_id is not None:
        return f"{stem}-model-v{version_id}.zip"
    return f"{stem}-{fmt.suffix}"


def export_stream(session: Session, project: Project, format_name: str, storage_dir: Path, *,
                  filters: Filters | None = None, version_id: int | None = None,
                  progress: Progress | None = None) -> Export:
    """The export's bytes (lazily: streamed as they are read) and its file name.

    Every check that can refuse (an unknown format, no model) runs here, before the
    first byte, so a route can still answer with an error status.
    """
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ExportError(f"Unknown export format '{format_name}'; formats are "
                          f"{', '.join(FORMATS)}.")
    filters = filters or Filters()
    if fmt.name == "csv":
        chunks = labels_csv(session, project, filters, progress)
    elif fmt.name == "jsonl":
        chunks = labels_jsonl(session, project, filters, progress)
    elif fmt.name == "folders":
        chunks = folders_zip(session, project, storage_dir, filters, progress)
    elif fmt.name == "model":
        version = package_version(session, project, version_id)
        version_id = version.id
        chunks = model_package_zip(session, project, storage_dir, version)
    else:
        chunks = agreement_csv(session, project)
    return Export(fmt, download_name(project, fmt, version_id), chunks)
