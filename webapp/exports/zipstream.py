"""A zip archive written as a stream of bytes, member by member.

zipfile writes to any object with ``write``: without ``seek``/``tell`` it uses
data descriptors (sizes after each member) instead of patching headers, so the
archive can go to an HTTP response as it is made.  Members are stored, not
deflated: cell images are JPEG/PNG already, and a .keras file is a zip itself.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

COPY_CHUNK = 1 << 20


class _Sink:
    """What zipfile writes into; drained after each member."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class Member:
    """One file of the archive: bytes in memory, or a file copied in chunks."""

    def __init__(self, name: str, *, data: bytes | None = None, path: Path | None = None,
                 modified: float | None = None) -> None:
        if (data is None) == (path is None):
            raise ValueError("a member has either data or a path")
        self.name, self.data, self.path = name, data, path
        self.modified = modified

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size


def _info(member: Member) -> zipfile.ZipInfo:
    moment = time.localtime(member.modified if member.modified is not None else time.time())
    info = zipfile.ZipInfo(member.name, date_time=tuple(max(v, d) for v, d in
                                                        zip(moment[:6], (1980, 1, 1, 0, 0, 0))))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    # Known up front, so zipfile picks zip64 headers for members over 2 GiB itself.
    info.file_size = member.size()
    return info


def stream_zip(members: Iterable[Member]) -> Iterator[bytes]:
    """The archive's bytes, yielded as each member (or each MiB of a large one) is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for member in members:
            with archive.open(_info(member), mode="w") as out:
                if member.data is not None:
                    out.write(member.data)
                else:
                    with member.path.open("rb") as src:
                        while chunk := src.read(COPY_CHUNK):
                            out.write(chunk)
                            if len(chunk) == COPY_CHUNK:
                                yield sink.drain()
            yield sink.drain()
    yield sink.drain()
