"""Content-addressed image storage on the local file system."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_path(sha256: str, extension: str) -> str:
    return f"images/{sha256[:2]}/{sha256}{extension}"


def write_atomic(root: Path, relative: str, data: bytes) -> bool:
    """Write into the store so a reader never sees a half-written file.

    Returns whether this call created the file (False: it was already stored,
    by another project's import of the same content).
    """
    target = root / relative
    if target.exists():  # same content, same name: already stored
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return True
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
