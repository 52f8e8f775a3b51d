"""Content-addressed image storage on the local file system."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.files import atomic_write


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
    atomic_write(target, lambda tmp: tmp.write_bytes(data), fsync=True)
    return True
