"""Which cell a reader sees next.

Pool cells that still need a reader's vote (models/labels.py decides), most
uncertain first under the active model (highest predictive entropy); before
any model exists, in the fixed random order given at import.  For one reader,
cells they already decided on are never offered again, and cells other
readers hold leases on only while the cell needs more readers than that.
Cells the reader skipped this session come last in line, not never (so a
small pool can't run dry from skips alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, false, func, select
from sqlalchemy.orm import Session, aliased

from models import Annotation, Image, LabelClass, Lease, ModelVersion, Origin, Prediction, Project
from models.labels import awaits_readers, needed_readers_sql, vote_count


@dataclass(frozen=True)
class Cell:
    image: Image
    prediction: Prediction | None
    suggestion: LabelClass | None


def active_version(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.is_active)
    )


def remaining(session: Session, project: Project) -> int:
    return session.scalar(select(func.count(Image.id)).where(*awaits_readers(project))) or 0


def queue_order(version: ModelVersion | None, skipped: list[int] | None) -> list:
    """The ORDER BY of the queue, kept in one place so it can be swapped whole."""
    order = [Image.id.in_(skipped)] if skipped else []
    if version:
        order += [Prediction.entropy.is_(None), Prediction.entropy.desc()]
    return order + [Image.shuffle_key, Image.id]


def leases_by_others(reader_id: int, now: datetime):
    """Scalar subquery: live leases of other readers on the current ``Image`` row."""
    return (select(func.count(Lease.id))
            .where(Lease.image_id == Image.id, Lease.user_id != reader_id, Lease.expires_at > now)
            .scalar_subquery())


_MINE = aliased(Annotation, name="mine")


def for_reader(reader_id: int, project: Project, now: datetime) -> tuple:
    """SQL conditions: cells this reader may be given now."""
    return (
        # A reader never sees the same cell twice (an undo hands it back explicitly).
        ~exists().where(_MINE.image_id == Image.id, _MINE.user_id == reader_id,
                        _MINE.origin == Origin.READER),
        vote_count() + leases_by_others(reader_id, now) < needed_readers_sql(project),
    )


def candidates(project: Project, version: ModelVersion | None, skipped: list[int] | None = None,
               reader_id: int | None = None, now: datetime | None = None):
    """SELECT (Image, Prediction, next free lease slot) in queue order."""
    join_on = and_(Prediction.image_id == Image.id,
                   Prediction.model_version_id == version.id) if version else false()
    conditions = list(awaits_readers(project))
    slot = vote_count()
    if reader_id is not None:
        conditions += for_reader(reader_id, project, now)
        slot = slot + leases_by_others(reader_id, now)
    return (select(Image, Prediction, slot.label("slot"))
            .outerjoin(Prediction, join_on)
            .where(*conditions)
            .order_by(*queue_order(version, skipped)))


def ranked(session: Session, project: Project, limit: int, skipped: list[int] | None = None,
           version: ModelVersion | None = None, reader_id: int | None = None,
           now: datetime | None = None) -> list[tuple[Image, Prediction | None]]:
    """The next ``limit`` cells in queue order, with the active model's prediction."""
    version = version or active_version(session, project.id)
    query = candidates(project, version, skipped, reader_id, now).limit(limit)
    return [(image, prediction) for image, prediction, _slot in session.execute(query).all()]


def suggestion_of(project: Project, prediction: Prediction | None) -> LabelClass | None:
    if prediction is None:
        return None
    return next((c for c in project.classes if c.id == prediction.predicted_class_id), None)


__all__ = ["Cell", "active_version", "candidates", "needed_readers_sql", "queue_order", "ranked",
           "remaining", "suggestion_of"]
