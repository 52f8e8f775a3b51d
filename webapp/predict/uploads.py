"""Uploaded cells into the prediction spool (worker/predict_spool.py), each file
validated as an import validates it (webapp/ingest/validate.py): a corrupt,
huge or not-an-image file gets its reason, and the others go on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from werkzeug.datastructures import FileStorage

from worker.predict_spool import new_batch, write_manifest

from ..ingest.sources import MAX_FILE_BYTES, READ_CHUNK
from ..ingest.validate import RejectedImage, decode

# One page of results; more is an import's job.
MAX_FILES = 50


class NothingToPredict(ValueError):
    """The request held no file at all, or too many; the message says why."""


@dataclass
class Spooled:
    batch: str
    folder: Path
    manifest: dict = field(default_factory=dict)

    @property
    def entries(self) -> list[dict]:
        return self.manifest["entries"]

    @property
    def stored(self) -> list[str]:
        """Stored names of the accepted files, in upload order."""
        return [e["stored"] for e in self.entries if e.get("stored")]


def display_name(filename: str | None) -> str:
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name[:200] or "unnamed"


def _read(storage: FileStorage, cap: int) -> bytes:
    parts, total = [], 0
    while True:
        block = storage.stream.read(min(READ_CHUNK, cap + 1 - total))
        if not block:
            return b"".join(parts)
        total += len(block)
        if total > cap:
            raise RejectedImage(f"file too large (more than {cap:,} bytes)")
        parts.append(block)


def spool_uploads(settings, files: list[FileStorage], *, project_id: int, user_id: int,
                  version_id: int) -> Spooled:
    """Validate and store each file; the manifest lists every one, accepted or not."""
    files = [f for f in files if f.filename]
    if not files:
        raise NothingToPredict("Choose one or more cell images to predict.")
    if len(files) > MAX_FILES:
        raise NothingToPredict(f"At most {MAX_FILES} images at a time ({len(files)} were sent); "
                               "import larger sets into a project instead.")
    batch, folder = new_batch(settings.instance_dir)
    entries = []
    for index, storage in enumerate(files):
        entry = {"index": index, "name": display_name(storage.filename), "stored": None,
                 "error": None}
        try:
            image = decode(_read(storage, MAX_FILE_BYTES), settings.max_image_pixels)
        except RejectedImage as exc:
            entry["error"] = str(exc)
        else:
            entry["stored"] = f"{index}{image.extension}"
            entry["width"], entry["height"] = image.width, image.height
            (folder / entry["stored"]).write_bytes(image.data)
        entries.append(entry)
    manifest = {"project_id": project_id, "user_id": user_id, "version_id": version_id,
                "created": time.time(), "entries": entries, "result": None}
    write_manifest(folder, manifest)
    return Spooled(batch, folder, manifest)
