"""What an import path contains: class folders, a flat folder, or a zip archive.

Each entry comes out as a SourceFile.  An entry that cannot be imported for a
reason known before reading it (a symbolic link that leaves the folder, a
FIFO, an encrypted zip member, …) carries that reason in ``problem`` so the
importer reports it by name instead of skipping it silently.  Reading streams
the file in chunks and stops as soon as the size cap is passed, so a
decompression-bomb member costs at most cap + one chunk of memory.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# Per file: no cell image comes close; guards against reading a huge file into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
READ_CHUNK = 1024 * 1024

# What zipfile can decompress; others (deflate64 = 9, PPMd, …) fail on read.
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_ZIP_METHOD_NAMES = {9: "deflate64", 98: "PPMd", 99: "AES encryption", 93: "zstandard",
                     95: "xz", 97: "WavPack", 10: "IBM TERSE", 18: "IBM TERSE (new)"}


class UnreadableFile(Exception):
    """A file or member could not be read; the message says why, for the user."""


class TooLarge(UnreadableFile):
    pass


@dataclass(frozen=True)
class SourceFile:
    name: str  # as shown to the user: relative path inside the import
    label: str | None  # class folder name, None for unlabeled files
    size: int  # as declared (file system or zip header); reading enforces the cap anyway
    open: Callable[[], BinaryIO] | None = None
    problem: str | None = None  # set: refused before reading, for this reason


def read_capped(source: SourceFile, cap: int, counter: list[int] | None = None,
                chunk: int = READ_CHUNK) -> bytes:
    """Read ``source`` in chunks; refuse it once more than ``cap`` bytes came out.

    ``counter[0]`` (if given) is increased by every byte read, also for a file
    refused halfway: what the import actually pulled into memory.
    """
    assert source.open is not None
    parts: list[bytes] = []
    total = 0
    try:
        with source.open() as fh:
            while True:
                block = fh.read(min(chunk, cap + 1 - total))
                if not block:
                    break
                total += len(block)
                if counter is not None:
                    counter[0] += len(block)
                if total > cap:
                    raise TooLarge(f"file too large (more than {cap:,} bytes)")
                parts.append(block)
    except UnreadableFile:
        raise
    except zipfile.BadZipFile as exc:
        # "Bad CRC-32 for file …", "Bad magic number for file header", …
        detail = "bad CRC-32" if "CRC" in str(exc) else "damaged entry"
        raise UnreadableFile(f"corrupt archive member ({detail})") from None
    except (zlib.error, EOFError):
        raise UnreadableFile("corrupt archive member (compressed data is damaged)") from None
    except RuntimeError as exc:
        if "encrypted" in str(exc) or "password" in str(exc):
            raise UnreadableFile("encrypted archive member (password-protected zips "
                                 "are not supported)") from None
        raise UnreadableFile(f"cannot read archive member ({type(exc).__name__})") from None
    except NotImplementedError:
        raise UnreadableFile("archive member uses a compression method this "
                             "importer cannot read") from None
    except PermissionError:
        raise UnreadableFile("cannot read file: permission denied") from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise UnreadableFile(f"cannot read file: {reason}") from None
    return b"".join(parts)


def _hidden(part: str) -> bool:
    return part.startswith(".") or part in {"__MACOSX", "Thumbs.db", "desktop.ini"}


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder entry is; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        # O_NONBLOCK: should the entry have been swapped for a FIFO since it was
        # listed, opening it must not hang; fstat then refuses anything not regular.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            kind = _kind(os.fstat(fd).st_mode)
            if kind is not None:
                raise UnreadableFile(f"not a regular file ({kind})")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
    return opener


def _folder_entry(real_root: Path, path: Path, rel: PurePosixPath,
                  label: str | None) -> SourceFile:
    name = rel.as_posix()
    try:
        st = path.lstat()
    except OSError as exc:
        return SourceFile(name, label, 0, problem=f"cannot read file: {os.strerror(exc.errno or 0)}")
    if stat.S_ISLNK(st.st_mode):
        target = Path(os.path.realpath(path))
        if not target.exists():
            return SourceFile(name, label, 0, problem="broken symbolic link (its target does "
                              "not exist)")
        if not target.is_relative_to(real_root):
            return SourceFile(name, label, 0, problem="symbolic link leading outside the "
                              "imported folder (refused)")
        if target.is_dir():
            return SourceFile(name, label, 0, problem="symbolic link to a folder (not followed)")
        st = target.stat()
        path = target
    kind = _kind(st.st_mode)
    if kind is not None:
        return SourceFile(name, label, 0, problem=f"not a regular file ({kind})")
    return SourceFile(name, label, st.st_size, _open_regular(path))


def _folder(root: Path) -> Iterator[SourceFile]:
    # Subfolders name classes (the ImageFolder layout); files beside them are unlabeled.
    # os.walk does not follow links to folders: such links come out as entries and
    # are reported, so a link cannot pull a folder from elsewhere into the import.
    real_root = Path(os.path.realpath(root))
    entries: list[tuple[PurePosixPath, Path]] = []
    unreadable: list[PurePosixPath] = []

    def on_error(exc: OSError) -> None:  # a folder os.walk cannot list: say so
        if exc.filename:
            unreadable.append(PurePosixPath(Path(exc.filename).relative_to(root).as_posix()))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        links = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if not _hidden(d) and d not in links]
        for name in [*filenames, *links]:
            if not _hidden(name):
                entries.append((rel_dir / name, here / name))
    for rel in unreadable:
        yield SourceFile(f"{rel.as_posix()}/", None, 0,
                         problem="cannot read folder: permission denied")
    for rel, path in sorted(set(entries)):
        label = rel.parts[0] if len(rel.parts) > 1 else None
        yield _folder_entry(real_root, path, rel, label)


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in pure.parts:
        # Never extracted by name (storage is content-addressed), but a name that
        # climbs out of the archive is the mark of a crafted zip ("zip slip").
        return "unsafe name in the archive (an absolute path or one leaving the archive's folder)"
    if info.flag_bits & 0x1:
        return "encrypted archive member (password-protected zips are not supported)"
    if info.compress_type not in _ZIP_METHODS:
        method = _ZIP_METHOD_NAMES.get(info.compress_type, "unknown")
        return (f"archive member uses compression method {info.compress_type} ({method}), "
                "which this importer cannot read; re-create the zip with standard deflate")
    return None


def _common_root(names: list[tuple[str, ...]], keep: set[str]) -> int:
    """1 when every name sits in one shared top folder that is not a class name
    (the folder a zip or a browser's folder upload was made from), else 0."""
    tops = {parts[0] for parts in names if len(parts) > 1}
    if len(tops) != 1 or any(len(parts) < 2 for parts in names):
        return 0
    return 0 if next(iter(tops)).lower() in keep else 1


def _zip(path: Path, labels: bool = False, class_names: set[str] = frozenset()
         ) -> Iterator[SourceFile]:
    with zipfile.ZipFile(path) as archive:
        infos = sorted(archive.infolist(), key=lambda i: i.filename)
        skip = 0
        if labels:
            skip = _common_root([PurePosixPath(i.filename).parts for i in infos
                                 if not i.is_dir() and not any(
                                     _hidden(p) for p in PurePosixPath(i.filename).parts)],
                                class_names)
        for info in infos:
            parts = PurePosixPath(info.filename).parts
            problem = _zip_problem(info)  # first: ".." would pass for a hidden name
            if info.is_dir() or (problem is None and any(_hidden(p) for p in parts)):
                continue
            if problem:
                yield SourceFile(info.filename, None, info.file_size, problem=problem)
                continue
            inner = parts[skip:]
            label = inner[0] if labels and len(inner) > 1 else None
            yield SourceFile(info.filename, label, info.file_size,
                             lambda info=info: archive.open(info))


def count_files(path: Path, zip_labels: bool = False) -> int:
    return sum(1 for _ in iter_source(path, zip_labels))


def iter_source(path: Path, zip_labels: bool = False,
                class_names: set[str] = frozenset()) -> Iterator[SourceFile]:
    """The entries under ``path``.  With ``zip_labels``, a zip's folders name
    classes as a folder's do (browser uploads); a single top folder holding
    everything is looked through unless it is one of ``class_names``."""
    if path.is_dir():
        yield from _folder(path)
    elif zipfile.is_zipfile(path):
        yield from _zip(path, zip_labels, {n.lower() for n in class_names})
    else:
        raise FileNotFoundError(f"{path} is neither a folder nor a .zip archive")
