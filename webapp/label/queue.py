"""Which cell a reader sees next.

Pool cells that still need a reader's vote (models/labels.py decides), most
uncertain first under the active model (highest predictive entropy); before
any model exists, in the fixed random order given at import.  For one reader,
cells they already decided on are never offered again, and cells other
readers hold leases on only while the cell needs more readers than that.
Cells the reader skipped this session come last in line, not never (so a
small pool can't run dry from skips alone).

The statements are built once per project reading rules and reused with
bound parameters: building these SQLAlchemy expressions costs more CPU than
running them, and labeling latency is what readers feel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Select, and_, bindparam, exists, false, func, select
from sqlalchemy.orm import Session, aliased

from models import Annotation, Image, LabelClass, Lease, ModelVersion, Origin, Prediction, Project
from models.labels import awaits_readers, needed_readers_sql, vote_count
from models.review import current_queue_position


@dataclass(frozen=True)
class Cell:
    image: Image
    prediction: Prediction | None
    suggestion: LabelClass | None


@dataclass(frozen=True)
class Rules:
    """The project settings the queue's SQL depends on (hashable: a cache key)."""

    id: int
    readers_per_cell: int
    contested_readers: int | None
    contested_class_ids: tuple[int, ...]
    agreement_share: float

    @classmethod
    def of(cls, project: Project) -> Rules:
        return cls(project.id, project.readers_per_cell, project.contested_readers,
                   tuple(project.contested_class_ids or ()), project.agreement_share)


def active_version(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.is_active)
    )


# The queue counter stops counting here ("200+"): an exact count of a large
# pool would scan it all on every decision.
REMAINING_CAP = 200


@lru_cache(maxsize=64)
def _remaining_stmt(rules: Rules) -> Select:
    capped = select(Image.id).where(*awaits_readers(rules)).limit(REMAINING_CAP + 1).subquery()
    return select(func.count()).select_from(capped)


def remaining(session: Session, project: Project) -> int:
    """Cells still needing a reader, counted up to REMAINING_CAP + 1."""
    return session.scalar(_remaining_stmt(Rules.of(project)), {"project_id": project.id}) or 0


def queue_order(version: bool, skipped: bool) -> list:
    """The ORDER BY of the queue, kept in one place so it can be swapped whole."""
    order = [Image.id.in_(bindparam("skipped", expanding=True))] if skipped else []
    # The current review round's frozen order first (models/review.py); cells
    # outside it follow in the order below.
    position = current_queue_position(bindparam("project_id"), Image.id)
    order += [position.is_(None), position]
    if version:
        order += [Prediction.entropy.is_(None), Prediction.entropy.desc()]
    return order + [Image.shuffle_key, Image.id]


_MINE = aliased(Annotation, name="mine")
_READER = bindparam("reader_id")
_NOW = bindparam("now")


def leases_by_others():
    """Scalar subquery: live leases of other readers on the current ``Image`` row."""
    return (select(func.count(Lease.id))
            .where(Lease.image_id == Image.id, Lease.user_id != _READER, Lease.expires_at > _NOW)
            .scalar_subquery())


def for_reader(rules: Rules) -> tuple:
    """SQL conditions: cells the reader (``:reader_id``) may be given at ``:now``."""
    return (
        # A reader never sees the same cell twice (an undo hands it back explicitly).
        ~exists().where(_MINE.image_id == Image.id, _MINE.user_id == _READER,
                        _MINE.origin == Origin.READER),
        vote_count() + leases_by_others() < needed_readers_sql(rules),
    )


@lru_cache(maxsize=256)
def _candidates_stmt(rules: Rules, version: bool, skipped: bool, reader: bool) -> Select:
    join_on = and_(Prediction.image_id == Image.id,
                   Prediction.model_version_id == bindparam("version_id")) if version else false()
    conditions = list(awaits_readers(rules))
    slot = vote_count()
    if reader:
        conditions += for_reader(rules)
        slot = slot + leases_by_others()
    return (select(Image, Prediction, slot.label("slot"))
            .outerjoin(Prediction, join_on)
            .where(*conditions)
            .order_by(*queue_order(version, skipped)))


def candidates(project: Project, version: ModelVersion | None, skipped: list[int] | None = None,
               reader_id: int | None = None, now: datetime | None = None
               ) -> tuple[Select, dict]:
    """SELECT (Image, Prediction, next free lease slot) in queue order, and its parameters."""
    stmt = _candidates_stmt(Rules.of(project), version is not None, bool(skipped),
                            reader_id is not None)
    params: dict = {"project_id": project.id}
    if version is not None:
        params["version_id"] = version.id
    if skipped:
        params["skipped"] = list(skipped)
    if reader_id is not None:
        params.update(reader_id=reader_id, now=now)
    return stmt, params


def ranked(session: Session, project: Project, limit: int, skipped: list[int] | None = None,
           version: ModelVersion | None = None, reader_id: int | None = None,
           now: datetime | None = None) -> list[tuple[Image, Prediction | None]]:
    """The next ``limit`` cells in queue order, with the active model's prediction."""
    version = version or active_version(session, project.id)
    stmt, params = candidates(project, version, skipped, reader_id, now)
    rows = session.execute(stmt.limit(limit), params).all()
    return [(image, prediction) for image, prediction, _slot in rows]


def suggestion_of(project: Project, prediction: Prediction | None) -> LabelClass | None:
    if prediction is None:
        return None
    return next((c for c in project.classes if c.id == prediction.predicted_class_id), None)
