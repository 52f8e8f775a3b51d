"""Content-addressed image storage on the local file system."""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.files import atomic_write


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_path(sha256: str, extension: str) -> str:
    return f"images/{sha256[:2]}/{sha256}{extension}"


def is_stored(root: Path, relative: str) -> bool:
    """Whether the store holds this content already (same content, same name)."""
    return (root / relative).exists()


def write_atomic(root: Path, relative: str, data: bytes) -> None:
    """Write into the store so a reader never sees a half-written file."""
    atomic_write(root / relative, lambda tmp: tmp.write_bytes(data), fsync=True)
