"""An already-labeled folder for the simulator, with its fixed stratified test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class SimulationRefused(ValueError):
    """The data cannot support a simulation; the message says why (shown to users)."""


@dataclass
class LabeledSet:
    """Cells with known classes: file paths (or storage paths), content hashes, labels."""

    paths: list[Path]
    shas: list[str]
    labels: np.ndarray  # int64 indices into class_names
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_class_folders(root: Path) -> LabeledSet:
    """One sub-folder per class, image files inside; duplicates (same content) once."""
    root = Path(root)
    if not root.is_dir():
        raise SimulationRefused(f"{root} is not a folder.")
    paths: list[Path] = []
    shas: list[str] = []
    labels: list[int] = []
    names: list[str] = []
    seen: set[str] = set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        names.append(folder.name)
        for f in files:
            sha = _sha256(f)
            if sha in seen:
                continue
            seen.add(sha)
            paths.append(f)
            shas.append(sha)
            labels.append(len(names) - 1)
    return LabeledSet(paths, shas, np.asarray(labels, dtype=np.int64), names)


def check_simulable(data: LabeledSet, initial: int, batch: int,
                    test_fraction: float = TEST_FRACTION) -> None:
    """Refuse data the loop cannot run on, naming the classes at fault."""
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    if len(data.class_names) < 2:
        have = ", ".join(f"{n}: {c}" for n, c in zip(data.class_names, counts)) or "none"
        raise SimulationRefused(
            f"The simulator needs labeled cells in at least 2 classes; found {have}.")
    # Each class needs one test cell and one pool cell at the least.
    small = [f"{n} ({c})" for n, c in zip(data.class_names, counts)
             if test_count(int(c), test_fraction) < 1 or c - test_count(int(c), test_fraction) < 1]
    if small:
        need = int(np.ceil(0.5 / test_fraction)) + 1
        raise SimulationRefused(
            f"Classes too small for a {test_fraction:.0%} test split (each needs at least "
            f"{need} cells): {', '.join(small)}.")
    pool = len(data) - sum(test_count(int(c), test_fraction) for c in counts)
    if initial < 1 or batch < 1:
        raise SimulationRefused("The initial labels and the round size must be at least 1.")
    if initial + batch > pool:
        raise SimulationRefused(
            f"The initial labels plus one round ({initial} + {batch}) exceed the "
            f"{pool} cells left for the pool after the test split.")


def test_count(n: int, fraction: float) -> int:
    return int(round(fraction * n))


def stratified_test_split(labels: np.ndarray, fraction: float = TEST_FRACTION,
                          seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, test indices): the same share of every class, fixed by the seed."""
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    pool: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = test_count(len(members), fraction)
        test.append(members[:k])
        pool.append(members[k:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))
