"""Nearest already-labeled cells, from the embeddings stored beside each model.

Cosine neighbours among cells whose label is final, one short row per
candidate class, so a curator can compare a doubtful cell with settled ones.
Where a class has no final cell yet and the project trusts the reference
labels that came with imports, its reference-labeled cells stand in (marked
so).  Before any model exists (or for a cell the model never saw) there is
nothing to compare with, and the page says so.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from dataclasses import dataclass

from models import ModelVersion, Project
from models.labels import FINAL, OPEN, CellState
from worker.ml import embeddings

PER_CLASS = 4


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[dict[int, int], np.ndarray]:
    ids, vectors = embeddings.load(Path(path))
    return {int(i): row for row, i in enumerate(ids)}, vectors


FINAL_SOURCE, REFERENCE_SOURCE = "final", "reference"


@dataclass(frozen=True)
class Neighbours:
    source: str | None  # FINAL_SOURCE, REFERENCE_SOURCE, or None: no cell of the class to compare
    cells: list[tuple[int, float]]  # (image id, similarity), best first
    references: int = 0  # reference-labeled cells of the class (shown when not trusted)


def comparable(project: Project, states: dict[int, CellState], image_id: int, class_id: int,
               rows: dict[int, int]) -> tuple[str | None, list[int], int]:
    """(source, embedding rows of cells of the class to compare with, reference cells)."""
    final = [rows[c.image_id] for c in states.values()
             if c.status == FINAL and c.class_id == class_id and c.image_id != image_id
             and c.image_id in rows]
    reference = [rows[c.image_id] for c in states.values()
                 if c.reference_class_id == class_id and c.image_id != image_id
                 and c.image_id in rows and c.status == OPEN and not c.votes]
    if final:
        return FINAL_SOURCE, final, len(reference)
    if reference and project.train_on_reference:
        return REFERENCE_SOURCE, reference, len(reference)
    return None, [], len(reference)


def nearest_by_class(storage_dir: Path, project: Project, version: ModelVersion | None,
                     image_id: int, class_ids: list[int], states: dict[int, CellState]
                     ) -> dict[int, Neighbours] | None:
    """class id -> its nearest comparable cells; None when there are no embeddings."""
    if version is None:
        return None
    path = embeddings.embeddings_path(storage_dir / version.artifact_path)
    if not path.is_file():
        return None
    rows, vectors = _load(str(path), os.path.getmtime(path))
    if image_id not in rows:
        return None
    query = vectors[rows[image_id]]
    ids = {row: i for i, row in rows.items()}
    out = {}
    for class_id in class_ids:
        source, members, references = comparable(project, states, image_id, class_id, rows)
        found, sims = embeddings.nearest(query, vectors, PER_CLASS,
                                         np.asarray(members, dtype=np.int64))
        out[class_id] = Neighbours(source, [(ids[int(r)], float(s)) for r, s in zip(found, sims)],
                                   references)
    return out
