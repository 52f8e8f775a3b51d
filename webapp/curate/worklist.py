"""The curator's queue: cells that need a person with the final word.

- disputed: k readers voted without k agreeing;
- flagged: a reader marked the cell ambiguous;
- model disagrees: a final label the active model contradicts with high
  confidence (a possible label error);
- rejected: a final label (no curator yet) whose class a reader marked wrong in
  the bulk-verification grid: a disagreement the votes alone do not show.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Prediction, Project
from models.labels import DISPUTED, FINAL, FLAGGED, CellState, cell_states
from models.images import Split

from ..label.queue import active_version

# A model this sure of another class than the final label flags a possible error.
CONTRADICTION_CONFIDENCE = 0.9

REASONS = {DISPUTED: "readers disagree", FLAGGED: "flagged ambiguous",
           "contradicted": "confident model disagrees",
           "rejected": "a reader rejected this label"}


@dataclass(frozen=True)
class Item:
    cell: CellState
    reason: str
    prediction: Prediction | None


def curation_items(session: Session, project: Project,
                   states: dict[int, CellState] | None = None) -> list[Item]:
    if states is None:
        states = cell_states(session, project, Split.POOL)
    version = active_version(session, project.id)
    predictions = {}
    if version is not None:
        predictions = {p.image_id: p for p in session.scalars(
            select(Prediction).where(Prediction.model_version_id == version.id))}
    items = []
    for cell in sorted(states.values(), key=lambda c: c.image_id):
        if cell.split != Split.POOL:
            continue
        p = predictions.get(cell.image_id)
        if cell.status in (DISPUTED, FLAGGED):
            items.append(Item(cell, REASONS[cell.status], p))
        elif (cell.status == FINAL and cell.curator is None and p is not None
              and p.confidence >= CONTRADICTION_CONFIDENCE and p.predicted_class_id != cell.class_id):
            items.append(Item(cell, REASONS["contradicted"], p))
        elif (cell.status == FINAL and cell.curator is None
              and any(cell.class_id in classes for classes in cell.rejected.values())):
            items.append(Item(cell, REASONS["rejected"], p))
    return items
