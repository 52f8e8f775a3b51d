"""Cached backbone features, one small file per image and backbone.

A frozen backbone gives the same features for the same image every time, so a
round computes them once and later rounds (head-only training, pool scoring,
re-activating an older model) read them back instead of running InceptionV3
again.  Files are keyed by the image's content hash under the backbone's key:
a fine-tuned backbone gets a key of its own, so its features never mix with
another's.  NumPy only.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from models.files import atomic_write

# \A…\Z, not ^…$: "$" also matches before a trailing newline.
_SAFE_KEY = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,119}\Z")


def backbone_key(weights: str | None, input_size: int, *, seed: int = 0,
                 weights_digest: str | None = None, tf_version: str = "") -> str:
    """The identity of a pristine backbone: what its features depend on.

    Random initialisation is deterministic for a seed and TensorFlow version
    (checked in tests), so it is cacheable too.
    """
    if weights == "imagenet":
        return f"imagenet-{input_size}"
    if weights is None:
        return f"random-s{seed}-tf{tf_version or 'x'}-{input_size}"
    if not weights_digest:
        raise ValueError("a weights file needs its digest to name its features")
    return f"file-{weights_digest[:16]}-{input_size}"


class FeatureStore:
    def __init__(self, root: Path, key: str):
        if not _SAFE_KEY.match(key):
            raise ValueError(f"unsafe feature key {key!r}")
        self.root = Path(root)
        self.key = key
        self.folder = self.root / key

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npy"

    def get_many(self, shas: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 [n, dim], found bool [n]); missing or damaged rows are zero."""
        feats = np.zeros((len(shas), dim), dtype=np.float32)
        found = np.zeros(len(shas), dtype=bool)
        for i, sha in enumerate(shas):
            try:
                row = np.load(self._path(sha), allow_pickle=False)
            except (OSError, ValueError, EOFError):
                continue  # not cached (or an empty or damaged file): it will be recomputed
            if row.shape == (dim,):
                feats[i] = row
                found[i] = True
        return feats, found

    def put_many(self, shas: Sequence[str], feats: np.ndarray, rows: Iterable[int]) -> int:
        """Store the given rows; each file is written aside and renamed into place."""
        written = 0
        for i in rows:
            row = np.asarray(feats[i], dtype=np.float32)
            atomic_write(self._path(shas[i]), lambda tmp, row=row: np.save(tmp, row, allow_pickle=False),
                         suffix=".npy")
            written += 1
        return written


def prune(root: Path, keep: set[str]) -> list[str]:
    """Delete the feature folders of backbones no kept model uses; returns their keys."""
    removed = []
    if not Path(root).is_dir():
        return removed
    for folder in Path(root).iterdir():
        if folder.is_dir() and folder.name not in keep and _SAFE_KEY.match(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
