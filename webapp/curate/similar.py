"""Nearest already-labeled cells, from the embeddings stored beside each model.

Cosine neighbours among cells whose label is final, one short row per
candidate class, so a curator can compare a doubtful cell with settled ones.
Before any model exists (or for a cell the model never saw) there is nothing
to compare with, and the page says so.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from models import ModelVersion
from models.labels import FINAL, CellState
from worker.ml import embeddings

PER_CLASS = 4


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[dict[int, int], np.ndarray]:
    ids, vectors = embeddings.load(Path(path))
    return {int(i): row for row, i in enumerate(ids)}, vectors


def nearest_by_class(storage_dir: Path, version: ModelVersion | None, image_id: int,
                     class_ids: list[int], states: dict[int, CellState]
                     ) -> dict[int, list[tuple[int, float]]] | None:
    """class id -> [(image id, similarity)], best first; None when there are no embeddings."""
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
        members = [rows[c.image_id] for c in states.values()
                   if c.status == FINAL and c.class_id == class_id and c.image_id != image_id
                   and c.image_id in rows]
        found, sims = embeddings.nearest(query, vectors, PER_CLASS, np.asarray(members, dtype=np.int64))
        out[class_id] = [(ids[int(r)], float(s)) for r, s in zip(found, sims)]
    return out
