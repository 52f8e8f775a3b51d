"""Which cell a reader sees next.

Pool cells no reader has decided on, most uncertain first under the active
model (highest predictive entropy); before any model exists, in the fixed
random order given at import.  Cells the reader skipped this session come
last in line, not never (so a small pool can't run dry from skips alone).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, false, func, select
from sqlalchemy.orm import Session

from models import Image, LabelClass, ModelVersion, Prediction, Project, Split
from models.labels import has_reader_annotation
from models.review import current_queue_position


@dataclass(frozen=True)
class Cell:
    image: Image
    prediction: Prediction | None
    suggestion: LabelClass | None


def active_version(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.is_active)
    )


def _pending(project_id: int):
    return (Image.project_id == project_id, Image.split == Split.POOL, ~has_reader_annotation())


def remaining(session: Session, project_id: int) -> int:
    return session.scalar(select(func.count(Image.id)).where(*_pending(project_id))) or 0


def ranked(session: Session, project: Project, limit: int, skipped: list[int] | None = None,
           version: ModelVersion | None = None) -> list[tuple[Image, Prediction | None]]:
    """The next ``limit`` cells in queue order, with the active model's prediction."""
    version = version or active_version(session, project.id)
    join_on = and_(Prediction.image_id == Image.id,
                   Prediction.model_version_id == version.id) if version else false()
    order = [Image.id.in_(skipped)] if skipped else []
    # The current review round's frozen order first (models/review.py); cells
    # outside it follow in the order below.
    position = current_queue_position(project.id, Image.id)
    order += [position.is_(None), position]
    if version:
        order += [Prediction.entropy.is_(None), Prediction.entropy.desc()]
    query = (
        select(Image, Prediction)
        .outerjoin(Prediction, join_on)
        .where(*_pending(project.id))
        .order_by(*order, Image.shuffle_key)
        .limit(limit)
    )
    return [tuple(row) for row in session.execute(query).all()]


def next_cell(session: Session, project: Project, skipped: list[int] | None = None) -> Cell | None:
    rows = ranked(session, project, 1, skipped)
    if not rows:
        return None
    image, prediction = rows[0]
    suggestion = None
    if prediction is not None:
        suggestion = next((c for c in project.classes if c.id == prediction.predicted_class_id), None)
    return Cell(image, prediction, suggestion)
