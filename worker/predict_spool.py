"""The prediction spool: uploaded cells waiting to be predicted, shown or added.

One folder per upload (a *batch*) under ``<instance>/predict-spool/<batch>``:

- ``<index><ext>``: each accepted file, as the importer would store it
  (webapp/ingest/validate.py decided that);
- ``<index>.cam.png``: its Grad-CAM overlay, drawn by the web process from the
  map the worker answered with, when it is first shown (webapp/predict/overlay.py);
- ``manifest.json``: who uploaded it to which project, each file's original
  name or the reason it was refused, and the predictions once they are back.

The web process writes the uploads, the manifest and the overlays; the predict
worker reads the files (both see the instance folder, as for imports).  Nothing
is added to a project from here unless a user asks (webapp/predict/routes.py);
batches older than ``KEEP_SECONDS`` are deleted.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

from models.files import atomic_write

SPOOL_DIR = "predict-spool"
MANIFEST = "manifest.json"
# Long enough to look at the results and decide to add a cell; short enough
# that the spool never grows into a second image store.
KEEP_SECONDS = 24 * 3600
# What the spool may hold in all (a day of uploads): past it a prediction is
# refused until batches expire, so no member can fill the instance's disk.
SPOOL_LIMIT_BYTES = 2 * 1024 ** 3
# One person's share of it: uploads of the last day beyond this are refused for
# that person alone, so one member cannot fill the spool and stop everyone's
# predictions (many cells belong in a project's import, not in the spool).
USER_SHARE_BYTES = SPOOL_LIMIT_BYTES // 8
_BATCH = re.compile(r"^[0-9a-f]{16}$")
_FILE = re.compile(r"^[0-9]{1,4}\.(jpg|png|tif|bmp|webp)$")


class SpoolError(LookupError):
    """No such batch or file (or a name that could not be one)."""


def spool_root(instance_dir: Path) -> Path:
    return Path(instance_dir) / SPOOL_DIR


def new_batch(instance_dir: Path) -> tuple[str, Path]:
    batch = secrets.token_hex(8)
    folder = spool_root(instance_dir) / batch
    folder.mkdir(parents=True)
    return batch, folder


def batch_folder(instance_dir: Path, batch: str) -> Path:
    """The batch's folder; SpoolError for a name that is not a batch id or is gone."""
    if not _BATCH.match(batch or ""):
        raise SpoolError(batch)
    folder = spool_root(instance_dir) / batch
    if not (folder / MANIFEST).is_file():
        raise SpoolError(batch)
    return folder


def spooled_file(instance_dir: Path, batch: str, name: str) -> Path:
    """A stored upload of the batch by its stored name (never a path from outside)."""
    if not _FILE.match(name or ""):
        raise SpoolError(name)
    path = batch_folder(instance_dir, batch) / name
    if not path.is_file():
        raise SpoolError(name)
    return path


def heatmap_name(stored: str) -> str:
    return Path(stored).stem + ".cam.png"


def read_manifest(instance_dir: Path, batch: str) -> dict:
    folder = batch_folder(instance_dir, batch)
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SpoolError(batch) from None


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write(folder / MANIFEST,
                 lambda tmp: tmp.write_text(json.dumps(manifest), encoding="utf-8"),
                 suffix=".json")


def spool_bytes(instance_dir: Path, user_id: int | None = None) -> int:
    """Bytes the spool's batches hold now; with ``user_id``, only that user's batches."""
    total, per_user = _tally(instance_dir)
    return total if user_id is None else per_user.get(user_id, 0)


def _tally(instance_dir: Path) -> tuple[int, dict[int, int]]:
    """(bytes in all, bytes per uploader), read from the batches as they are now."""
    total, per_user = 0, {}
    root = spool_root(instance_dir)
    for folder in root.iterdir() if root.is_dir() else ():
        try:
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        except (FileNotFoundError, NotADirectoryError):
            continue  # expired by another process, or not a batch
        total += size
        owner = _owner(folder)
        if owner is not None:
            per_user[owner] = per_user.get(owner, 0) + size
    return total, per_user


def _owner(folder: Path) -> int | None:
    """Who uploaded a batch (None while its manifest is being written, or unreadable)."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("user_id")
    except (OSError, ValueError, AttributeError):
        return None


def discard(folder: Path) -> None:
    """Delete one batch now (its prediction failed: nothing to show or add)."""
    shutil.rmtree(folder, ignore_errors=True)


def _age_mark(folder: Path) -> float:
    """When the batch was uploaded and answered: its manifest's time (an overlay
    drawn later touches the folder, and must not keep the batch another day)."""
    try:
        return (folder / MANIFEST).stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return folder.stat().st_mtime  # still being written, or not a batch


def expire(instance_dir: Path, keep_seconds: int = KEEP_SECONDS, now: float | None = None) -> int:
    """Delete batches older than ``keep_seconds``; returns how many went."""
    root = spool_root(instance_dir)
    if not root.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - keep_seconds
    gone = 0
    for folder in root.iterdir():
        try:
            if _BATCH.match(folder.name) and _age_mark(folder) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        except FileNotFoundError:
            continue  # another process expired it first
    return gone


# How often one web process looks through the whole spool for its limits: a
# busy day holds thousands of batches, too many to read at every request.
SCAN_SECONDS = 10.0
_usage: dict[str, tuple[float, int, dict[int, int]]] = {}
_usage_lock = threading.Lock()


def usage(instance_dir: Path, now: float | None = None) -> tuple[int, dict[int, int]]:
    """(bytes in all, bytes per uploader) of the spool, after expiring old batches.

    One pass at most every SCAN_SECONDS per process; what this process spools
    meanwhile is added by ``note_spooled``.  Other processes' uploads of the
    last few seconds may be missed: the limits guard the disk, not the byte.
    """
    key = str(instance_dir)
    now = time.monotonic() if now is None else now
    with _usage_lock:
        cached = _usage.get(key)
        if cached is not None and now - cached[0] < SCAN_SECONDS:
            return cached[1], dict(cached[2])
    expire(instance_dir)
    total, per_user = _tally(instance_dir)
    with _usage_lock:
        _usage[key] = (now, total, per_user)
    return total, dict(per_user)


def note_spooled(instance_dir: Path, user_id: int, nbytes: int) -> None:
    """Count a batch this process just spooled until the next scan sees it."""
    with _usage_lock:
        cached = _usage.get(str(instance_dir))
        if cached is not None:
            when, total, per_user = cached
            per_user = {**per_user, user_id: per_user.get(user_id, 0) + nbytes}
            _usage[str(instance_dir)] = (when, total + nbytes, per_user)
