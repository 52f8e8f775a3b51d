"""What an import path contains: class folders, a flat folder, or a zip archive."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

# Per file: no cell image comes close; guards against reading a huge file into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class SourceFile:
    name: str  # as shown to the user: relative path inside the import
    label: str | None  # class folder name, None for unlabeled files
    size: int
    read: Callable[[], bytes]


def _hidden(part: str) -> bool:
    return part.startswith(".") or part in {"__MACOSX", "Thumbs.db", "desktop.ini"}


def _folder(root: Path) -> Iterator[SourceFile]:
    # Subfolders name classes (the ImageFolder layout); files beside them are unlabeled.
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(_hidden(p) for p in rel.parts) or not path.is_file():
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else None
        yield SourceFile(str(rel), label, path.stat().st_size, path.read_bytes)


def _zip(path: Path) -> Iterator[SourceFile]:
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            parts = Path(info.filename).parts
            if info.is_dir() or any(_hidden(p) for p in parts):
                continue
            yield SourceFile(info.filename, None, info.file_size,
                             lambda info=info: archive.read(info))


def count_files(path: Path) -> int:
    return sum(1 for _ in iter_source(path))


def iter_source(path: Path) -> Iterator[SourceFile]:
    if path.is_dir():
        yield from _folder(path)
    elif zipfile.is_zipfile(path):
        yield from _zip(path)
    else:
        raise FileNotFoundError(f"{path} is neither a folder nor a .zip archive")
