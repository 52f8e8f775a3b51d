"""One way to write a file in place: aside, then moved over the target."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], *, suffix: str = "",
                 fsync: bool = False, mode: int | None = None, overwrite: bool = True) -> bool:
    """Fill a temporary file beside ``path`` with ``write(tmp)``, then move it into
    place: readers see the old file or the whole new one, never half of it (same
    directory, so the move is a rename on one file system).  The temporary file is
    hidden (a leading dot) and removed whatever happens.

    - ``suffix``: the temporary name's ending (NumPy and Keras choose the format by it).
    - ``fsync``: flush it to disk before the move, for files a crash must not leave empty.
    - ``mode``: its permissions (e.g. 0o600 for a secret).
    - ``overwrite=False``: link instead of rename, so an existing file wins and
      two processes racing end up with the same one; returns False when it lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named before it is created (not mkstemp): an interruption (Ctrl-C, SIGTERM)
    # landing right after the file appears is still inside the ``try`` whose
    # ``finally`` removes it.  Created exclusively, owner-only, like mkstemp's.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
